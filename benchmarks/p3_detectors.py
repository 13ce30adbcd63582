"""P3: detectors, one forward for all labels and batched images versus the usual one-pass-per-label paths.

- P3: Grounding DINO-T, 8 labels, one 640x480 image: one forward per prompt (what autodistill's Grounding DINO
  plugin and the zero-shot pipeline do) / prelabel's single joint forward. Target >= 6x.
- P3b: OWLv2 B/16, 3 labels, one image: transformers ``pipeline("zero-shot-object-detection")`` / prelabel.
- P3c: OWLv2 B/16, 4 images: 4 single-image calls / one batch of 4.

Real-size architectures with random weights (speed does not depend on the weights), same process, calls
interleaved.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.common import Row, cache_dir, interleaved_medians, real_size_grounding_dino, real_size_owlv2
from model_adapters.base import ModelSpec, Query, make_params
from model_adapters.grounding_dino import GroundingDino
from model_adapters.owl import OwlV2

LABELS = ("car", "truck", "person", "bicycle", "dog", "cat", "traffic light", "bus")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def _grounding_dino() -> tuple[float, float]:
    image = _image(0)
    gdino = GroundingDino(ModelSpec("grounding_dino", str(real_size_grounding_dino(cache_dir() / "grounding-dino-t"))))
    gdino.load()

    def query(mode: str) -> Query:
        return Query(LABELS, make_params(GroundingDino.Params, {"prompt_mode": mode}, owner="grounding_dino"))

    gdino([image], query("joint"))  # warm-up
    return interleaved_medians(lambda: gdino([image], query("per_prompt")), lambda: gdino([image], query("joint")), 2)


def _owlv2() -> tuple[float, float, float, float]:
    from transformers import pipeline

    owl_dir = real_size_owlv2(cache_dir() / "owlv2-base16")
    owl = OwlV2(ModelSpec("owlv2", str(owl_dir)))
    owl.load()
    labels = LABELS[:3]
    query = Query(labels, make_params(OwlV2.Params, {}, owner="owlv2"))
    detector = pipeline("zero-shot-object-detection", model=str(owl_dir), device="cpu")
    image = _image(0)
    pil = Image.fromarray(image)
    owl([image], query)  # warm-up
    piped, single = interleaved_medians(
        lambda: detector(pil, candidate_labels=list(labels)), lambda: owl([image], query), 2
    )
    images = [_image(seed) for seed in range(4)]
    singles, batched = interleaved_medians(lambda: [owl([img], query) for img in images], lambda: owl(images, query), 2)
    return piped, single, singles, batched


def run() -> list[Row]:
    """Time the three comparisons (models loaded one family at a time)."""
    per_prompt, joint = _grounding_dino()
    piped, single, singles, batched = _owlv2()
    return [
        Row("P3", "GDINO-T 8 labels: forward per prompt / joint", per_prompt, joint, per_prompt / joint, ">= 6x"),
        Row("P3b", "OWLv2 B/16 3 labels, 1 image: pipeline / prelabel", piped, single, piped / single, "> 1x"),
        Row("P3c", "OWLv2 B/16 4 images: 4 single calls / batch of 4", singles, batched, singles / batched, "GPU > 1x"),
    ]
