"""G1: generative grounding adapters' cost over the bare ``model.generate``, through ``/predict`` in-process.

For Florence-2-base (``florence2``, ``task: phrase_grounding``) and Kosmos-2 (``kosmos2``, ``mode: describe``),
real-size architectures with random weights, on one 640x480 JPEG with three labels:

- prelabel: the task through ``/predict`` (Flask test client): decoding the image, the adapter's preprocessing,
  its generation (greedy, with each token's probability), parsing and scoring, the regions' JSON.
- baseline: ``model.generate`` alone, greedy, on the same model with the same processor inputs (computed once
  beforehand, so the baseline pays for no preprocessing at all).

Both generate exactly ``NEW_TOKENS`` tokens: the adapter's ``max_new_tokens`` setting bounds the answer and the
model's generation config gets ``min_new_tokens`` of the same value, so neither stops early at an end token (random
weights answer nonsense of any length). Target <= 1.10: the adapter adds parsing and scoring, not forward passes.

Also printed: seconds per image through ``/predict`` and the decode cost per generated token, from the bare
``generate`` with ``NEW_TOKENS`` and with 1 token: (t_N - t_1) / (N - 1), the cost of one more token of an answer
(the image encoding and the prompt's forward pass are in t_1). Absolute times depend on the machine; on a shared
2-core CPU they vary by tens of percent between runs. Calls are interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.app import create_app
from backend.settings import ServerSettings
from benchmarks.common import (
    Row,
    cache_dir,
    interleaved_medians,
    median_time,
    real_size_florence2_base,
    real_size_kosmos2,
)
from model_adapters.base import ModelSpec
from model_adapters.florence2 import TASK_TOKENS
from model_adapters.generative import generate
from model_adapters.kosmos2 import DESCRIBE_PROMPT

NEW_TOKENS = 32
REPEATS = {"florence2": 3, "kosmos2": 2}
LABELS = ("car", "person", "bicycle")
CONFIG = f"""<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">
{"".join(f'<Label value="{label}"/>' for label in LABELS)}</RectangleLabels></View>"""
PROMPTS = {
    "florence2": TASK_TOKENS["phrase_grounding"] + ". ".join(LABELS) + ".",
    "kosmos2": DESCRIBE_PROMPT,
}


def _image() -> tuple[Image.Image, dict[str, Any]]:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    task = {"id": 1, "data": {"image": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()}}
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), task


def _measure(client: Any, project: str, name: str, model_dir: Path) -> dict[str, float]:
    """One model: interleaved ``/predict`` and bare ``generate`` medians, and the per-token decode cost."""
    detection = {"model": name, "model_id": str(model_dir), "device": "cpu", "dtype": "float32"}
    detection["max_new_tokens"] = NEW_TOKENS
    body = {"project": project, "schema": CONFIG, "extra_params": {"detection": detection}}
    assert client.post("/setup", json=body).status_code == 200
    pil, task = _image()

    def predict() -> None:
        response = client.post("/predict", json={"project": project, "tasks": [task]})
        assert response.status_code == 200 and "results" in response.json, response.json

    predict()  # loads the model into the server's pool
    service = client.application.extensions["prelabel"]
    adapter = service.pool.get(ModelSpec(name, str(model_dir), "cpu", "float32"), timeout=600)
    model, processor = adapter.model, adapter.processor
    for module in model.modules():  # neither side may stop early (Kosmos-2 generates through its text model)
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.min_new_tokens = NEW_TOKENS
    inputs = dict(processor(images=pil, text=PROMPTS[name], return_tensors="pt"))

    def bare(tokens: int) -> Callable[[], Any]:
        return lambda: model.generate(
            **inputs, min_new_tokens=tokens, max_new_tokens=tokens, do_sample=False, num_beams=1
        )

    eos = [processor.tokenizer.eos_token_id]
    answer = generate(model, inputs, max_new_tokens=NEW_TOKENS, eos_token_ids=eos)[0]  # warm-up, and a check
    assert len(answer.ids) == NEW_TOKENS, f"{name}: {len(answer.ids)} tokens generated, not {NEW_TOKENS}"
    bare_s, predict_s = interleaved_medians(bare(NEW_TOKENS), predict, REPEATS[name])
    first_s = median_time(bare(1), REPEATS[name])
    return {"bare": bare_s, "predict": predict_s, "token": (bare_s - first_s) / (NEW_TOKENS - 1), "first": first_s}


def run() -> list[Row]:
    """Time Florence-2-base, then Kosmos-2 (about 1 GB and 7 GB of float32 weights, both kept loaded)."""
    models = {
        "florence2": ("Florence-2-base", real_size_florence2_base(cache_dir() / "florence2-base")),
        "kosmos2": ("Kosmos-2", real_size_kosmos2(cache_dir() / "kosmos2-patch14-224")),
    }
    rows = []
    with tempfile.TemporaryDirectory() as work:
        client = create_app(ServerSettings(model_dir=Path(work), preload_projects=0, device="cpu")).test_client()
        for index, (name, (title, model_dir)) in enumerate(models.items()):
            t = _measure(client, f"{index + 1}.1", name, model_dir)
            print(
                f"G1 {title}: {t['predict']:.2f} s per 640x480 image through /predict ({NEW_TOKENS} tokens); "
                f"bare generate {t['bare']:.2f} s, of which 1 token {t['first']:.2f} s; "
                f"{1000 * t['token']:.0f} ms per further generated token (this machine, CPU)"
            )
            rows.append(
                Row(f"G1{'' if index == 0 else 'b'}", f"{title}, {NEW_TOKENS} tokens: /predict / bare generate",
                    t["bare"], t["predict"], t["predict"] / t["bare"], "<= 1.10")
            )  # fmt: skip
    return rows
