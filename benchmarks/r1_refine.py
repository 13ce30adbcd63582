"""R1: the refine stages' cost, through ``/predict`` in-process with real-size random-weight models.

- R1: one 4000x3000 JPEG, Grounding DINO-T: tiled (1024-px tiles, overlap 0.2: 5 x 4 = 20 tiles, plus the whole
  image) / the whole image alone. The tiles are batched; the ratio should stay near the 21 forwards it runs.
- R1b: one 640x480 image, an ensemble of Grounding DINO-T and OWLv2 B/16 / the two detectors each alone, summed.
  Target <= 1.05: fusing costs next to nothing and nothing runs twice.

Weights do not change speed; calls are interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.app import create_app
from backend.refine.tiling import Tiling, windows
from backend.settings import ServerSettings
from benchmarks.common import Row, cache_dir, interleaved_medians, real_size_grounding_dino, real_size_owlv2

REPEATS = 3
TILED_REPEATS = 1  # after the warm-up call; one tiled call is 21 forwards, minutes on a shared CPU
CONFIG = """<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">
<Label value="car"/><Label value="person"/><Label value="bicycle"/></RectangleLabels></View>"""


def _task(width: int, height: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return {"id": 1, "data": {"image": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()}}


def _predictor(client: Any, project: str, detection: dict[str, Any], task: dict[str, Any]) -> Any:
    body = {"project": project, "schema": CONFIG, "extra_params": {"detection": detection}}
    assert client.post("/setup", json=body).status_code == 200

    def predict() -> None:
        response = client.post("/predict", json={"project": project, "tasks": [task]})
        assert response.status_code == 200 and response.json["results"][0] != [], response.json

    predict()  # loads the models, warms up
    return predict


def run() -> list[Row]:
    gdino = {"model": "grounding_dino", "model_id": str(real_size_grounding_dino(cache_dir() / "grounding-dino-t"))}
    owl = {"model": "owlv2", "model_id": str(real_size_owlv2(cache_dir() / "owlv2-base16"))}
    with tempfile.TemporaryDirectory() as work:
        client = create_app(ServerSettings(model_dir=Path(work), preload_projects=0, device="cpu")).test_client()
        large = _task(4000, 3000)
        whole = _predictor(client, "1.1", gdino, large)
        tiled = _predictor(client, "2.1", {**gdino, "tiling": {"tile": 1024, "overlap": 0.2}}, large)
        whole_s, tiled_s = interleaved_medians(whole, tiled, TILED_REPEATS)
        forwards = len(windows(4000, 3000, Tiling(tile=1024, overlap=0.2))) + 1
        small = _task(640, 480)
        alone = [_predictor(client, "3.1", gdino, small), _predictor(client, "4.1", owl, small)]
        ensemble = _predictor(client, "5.1", {"models": [gdino, owl]}, small)
        members_s, ensemble_s = interleaved_medians(lambda: [predict() for predict in alone], ensemble, REPEATS)
    return [
        Row("R1", f"4000x3000, GDINO-T: tiled ({forwards} forwards) / whole", whole_s, tiled_s, tiled_s / whole_s,
            f"~{forwards} (its forwards)"),
        Row("R1b", "640x480 ensemble GDINO-T+OWLv2 / members alone, summed", members_s, ensemble_s,
            ensemble_s / members_s, "<= 1.05"),
    ]  # fmt: skip
