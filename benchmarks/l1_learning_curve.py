"""L1: what a fit learns, as accuracy on held-out images after k annotated examples per label (k = 1, 5, 20).

Real weights are out of reach here, so the task is synthetic and says so: four labels that are quarters of the hue
circle (random saturation, brightness and hue within the quarter, heavy pixel noise, random distractor discs), at
224 px, classified by real-size architectures with random weights. A random text tower knows no words, so the
zero-shot model is at chance; a random image tower still encodes colour, so the heads have something to learn from.
The numbers show the learning path works end to end, not how well real checkpoints learn.

Each (head, k) is its own project fitted through the real path: annotation webhooks -> learner -> a versioned
artifact; the served head then scores the held-out embeddings. Heads: CLIP B/32 with its zero-shot prior (the
default), the same as a plain linear probe (``learning.prior_weight: 0``), and DINOv2 ViT-S/14 (no text tower).
"""

from __future__ import annotations

import base64
import colorsys
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import Row, cache_dir, real_size_clip, real_size_dinov2_small

LABELS = ("Red", "Green", "Cyan", "Purple")
CONFIG = (
    "<View><Image name='image' value='$image'/><Choices name='hue' toName='image'>"
    + "".join(f"<Choice value='{label}'/>" for label in LABELS)
    + "</Choices></View>"
)
TRAIN_PER_LABEL, TEST_PER_LABEL, REPEATS = 20, 25, 3


def hue_image(label: int, rng: np.random.Generator) -> np.ndarray:
    hue = (label + rng.uniform(0, 1)) / len(LABELS)
    base = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.25, 0.6), rng.uniform(0.5, 0.9))) * 255
    pixels = np.clip(base + rng.normal(0, 90, (224, 224, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        size = int(rng.integers(20, 80))
        x, y = (int(v) for v in rng.integers(0, 224 - size, 2))
        draw.ellipse([x, y, x + size, y + size], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return np.array(image)


def data_uri(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def run() -> list[Row]:
    """Accuracy on held-out images per head and k, against the zero-shot model (or chance without a text tower)."""
    from backend.app import create_app
    from backend.settings import ServerSettings
    from model_adapters.base import ModelSpec

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(LABELS)), TRAIN_PER_LABEL + TEST_PER_LABEL)
    uris = [data_uri(hue_image(int(label), rng)) for label in labels]
    train = {k: np.nonzero(labels == k)[0][:TRAIN_PER_LABEL] for k in range(len(LABELS))}
    test = np.concatenate([np.nonzero(labels == k)[0][TRAIN_PER_LABEL:] for k in range(len(LABELS))])
    clip_dir = real_size_clip(cache_dir() / "clip-b32")
    heads = {
        "CLIP B/32 head (zero-shot prior)": {"classification": {"model": "clip", "model_id": str(clip_dir)}},
        "CLIP B/32 linear probe": {"classification": {"model": "clip", "model_id": str(clip_dir)},
                                   "learning": {"prior_weight": 0}},
        "DINOv2 ViT-S/14 head": {"classification": {"model": "dinov2",
                                                    "model_id": str(real_size_dinov2_small(cache_dir() / "dinov2-s"))}},
    }  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as work:
        app = create_app(ServerSettings(model_dir=Path(work), preload_projects=0, fit_debounce=3600.0, device="cpu"))
        client, service = app.test_client(), app.extensions["prelabel"]
        project = 0
        for name, extra in heads.items():
            spec = ModelSpec(extra["classification"]["model"], extra["classification"]["model_id"], "cpu", "auto")
            adapter = service.pool.get(spec, 600)
            test_embeddings = _embed(service, spec, adapter, [uris[i] for i in test])
            zero_shot = _zero_shot(adapter, test_embeddings, labels[test])
            for k in (1, 5, 20):
                accuracies = []
                for _ in range(REPEATS):
                    project += 1
                    chosen = np.concatenate([rng.choice(train[c], k, replace=False) for c in range(len(LABELS))])
                    head = _fit(client, service, project, extra, [(uris[i], LABELS[labels[i]]) for i in chosen])
                    predicted = head.head.probabilities(test_embeddings).argmax(axis=1)
                    accuracies.append(float((predicted == labels[test]).mean()))
                accuracy = float(np.mean(accuracies))
                baseline = "zero-shot" if zero_shot is not None else "chance (no text tower)"
                reference = zero_shot if zero_shot is not None else 1 / len(LABELS)
                rows.append(Row("L1", f"{name}, k={k}/label: held-out accuracy vs {baseline}", reference, accuracy,
                                accuracy / reference, "> 1 (synthetic hue task, random weights)", unit="acc"))  # fmt: skip
    return rows


def _embed(service: Any, spec: Any, adapter: Any, uris: list[str]) -> np.ndarray:
    from backend.media import decode_image

    rule = adapter.resize_rule.scale if adapter.resize_rule else None
    pixels = [decode_image(base64.b64decode(u.split(",", 1)[1]), 10**8, rule).pixels for u in uris]
    batches = [pixels[i : i + adapter.max_batch_size] for i in range(0, len(pixels), adapter.max_batch_size)]
    return np.concatenate([service.pool.call(spec, lambda a, b=b: a.embed(b), len(b)) for b in batches])


def _zero_shot(adapter: Any, embeddings: np.ndarray, truth: np.ndarray) -> float | None:
    """The zero-shot answer's accuracy: the argmax of ``scale * cos + bias`` over the labels' text embeddings.

    That is the model's own zero-shot computation; the softmax on top keeps the order.
    """
    if not hasattr(adapter, "text_prior"):
        return None
    prompts, scale, bias = adapter.text_prior([label.lower() for label in LABELS], ("a photo of a {}.",))
    return float(((embeddings @ prompts.T * scale + bias).argmax(axis=1) == truth).mean())


def _fit(client: Any, service: Any, project: int, extra: dict, examples: list[tuple[str, str]]) -> Any:
    key = f"{project}.1"
    assert client.post("/setup", json={"project": key, "schema": CONFIG, "extra_params": extra}).status_code == 200
    for n, (uri, label) in enumerate(examples, start=1):
        event = {"action": "ANNOTATION_CREATED", "project": {"id": project},
                 "annotation": {"id": project * 1000 + n, "task": n, "updated_at": n,
                                "result": [{"from_name": "hue", "to_name": "image", "type": "choices",
                                            "value": {"choices": [label]}}]},
                 "task": {"id": n, "data": {"image": uri}}}  # fmt: skip
        assert client.post("/webhook", json=event).status_code == 200
    while service.learner.run_due(debounce=0.0):
        pass
    record = service.store.get(key)
    plan = service.learner.serve(record, service.plan(record.label_config, record.extra_params))
    assert plan.model_version.endswith("-fit1"), plan.model_version
    return plan.targets[0].head
