"""P1: ``/predict`` end to end for one 640x480 image, divided by the bare adapter call on the same image.

Both run in one session with the same real-size Grounding DINO-T (random weights): the server as
``prelabel serve`` (gunicorn, one worker) over HTTP, the adapter in this process. Calls alternate so machine
noise hits both alike; both processes use passive OpenMP waits, so one's idle threads do not spin on the cores
while the other computes. The ratio is prelabel's protocol, media and encoding overhead; target <= 1.03.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks.common import Row, cache_dir, interleaved_medians, real_size_grounding_dino
from model_adapters.base import ModelSpec, Query, make_params
from model_adapters.grounding_dino import GroundingDino
from tests.e2e.prelabel_server import PrelabelServer

REPEATS = 7
CONFIG = """<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">
<Label value="Cat"/><Label value="Dog"/><Label value="Person"/></RectangleLabels></View>"""


def run() -> list[Row]:
    """Median wall time of ``/predict`` and of ``adapter([image], query)``, interleaved."""
    model_dir = real_size_grounding_dino(cache_dir() / "grounding-dino-t")
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    task = {"id": 1, "data": {"image": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()}}

    adapter = GroundingDino(ModelSpec("grounding_dino", str(model_dir), device="cpu"))
    adapter.load()
    query = Query(("Cat", "Dog", "Person"), make_params(GroundingDino.Params, {}, owner="grounding_dino"))

    with (
        tempfile.TemporaryDirectory() as work,
        PrelabelServer(Path(work), {"PRELABEL_DEVICE": "cpu", "OMP_WAIT_POLICY": "PASSIVE"}, workers=1) as server,
    ):
        extra = {"detection": {"model_id": str(model_dir)}}
        requests.post(
            f"{server.url}/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra}, timeout=10
        )
        body = {"tasks": [task], "project": "1.1", "label_config": CONFIG, "params": {"context": None}}

        def predict() -> None:
            response = requests.post(f"{server.url}/predict", json=body, timeout=600)
            response.raise_for_status()

        predict()  # waits for the model to load
        adapter([decoded], query)  # warm-up
        served, bare = interleaved_medians(predict, lambda: adapter([decoded], query), REPEATS)
    return [Row("P1", "/predict 640x480, GDINO-T / bare adapter call", bare, served, served / bare, "<= 1.03")]
