"""P2: 16 tasks classified zero-shot with CLIP ViT-B/32 (real size, random weights).

Baseline: transformers ``pipeline("zero-shot-image-classification")`` called per image, which embeds the
label prompts again for every image. prelabel: the CLIP adapter on the 16 images in one batch, with the
prompts' text embeddings computed once and cached (warm, as for every batch after a project's first).
Target >= 2x.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.common import Row, cache_dir, interleaved_medians, real_size_clip
from model_adapters.base import ModelSpec, Query, make_params
from model_adapters.clip import Clip

LABELS = ("cat", "dog", "car", "person", "bicycle", "tree", "house", "bird", "boat", "chair")
TASKS = 16


def run() -> list[Row]:
    """Median time of 16 pipeline calls versus one cached, batched adapter call."""
    from transformers import pipeline

    model_dir = real_size_clip(cache_dir() / "clip-vit-b32")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(TASKS)]
    pils = [Image.fromarray(image) for image in images]
    classifier = pipeline("zero-shot-image-classification", model=str(model_dir), device="cpu")
    adapter = Clip(ModelSpec("clip", str(model_dir), device="cpu"))
    adapter.load()
    query = Query(LABELS, make_params(Clip.Params, {}, owner="clip"))
    adapter(images[:1], query)  # warm: the project's text embeddings are cached after its first batch

    def per_image() -> None:
        for pil in pils:
            classifier(pil, candidate_labels=list(LABELS))

    def batched() -> None:
        for start in range(0, TASKS, adapter.max_batch_size):
            adapter(images[start : start + adapter.max_batch_size], query)

    baseline, ours = interleaved_medians(per_image, batched, 3)
    return [
        Row("P2", f"CLIP B/32, {TASKS} tasks: pipeline per image / batched", baseline, ours, baseline / ours, ">= 2x")
    ]
