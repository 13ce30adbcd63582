"""P5: brush RLE encoding of a 4000x3000 mask, SDK ``mask2rle`` versus ``backend.brush_rle.mask_to_rle``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from label_studio_sdk.converter.brush import mask2rle
from PIL import Image, ImageDraw

from backend.brush_rle import mask_to_rle
from benchmarks.common import Row

WIDTH, HEIGHT = 4000, 3000
REPEATS = 3


def build_mask(seed: int = 5) -> np.ndarray:
    """A 3000x4000 uint8 0/255 mask: a few large filled shapes whose edges are ragged with noise."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((300, 250, 1900, 1650), fill=255)
    draw.polygon([(2200, 300), (3800, 500), (3600, 2700), (2500, 2200), (2100, 1200)], fill=255)
    draw.rectangle((600, 1900, 1800, 2800), fill=255)
    draw.ellipse((900, 2100, 1400, 2600), fill=0)  # a hole
    mask = np.asarray(canvas) > 0

    # Ragged boundaries, as a segmentation model produces: flip random pixels within 3 px of an edge.
    edge = np.zeros_like(mask)
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    band = edge.copy()
    for shift in (1, 2, 3):
        band[:, shift:] |= edge[:, :-shift]
        band[:, :-shift] |= edge[:, shift:]
        band[shift:, :] |= edge[:-shift, :]
        band[:-shift, :] |= edge[shift:, :]
    mask ^= band & (rng.random(mask.shape) < 0.3)
    # A few speckles of false positives.
    speckles = rng.integers(0, [HEIGHT, WIDTH], size=(2000, 2))
    mask[speckles[:, 0], speckles[:, 1]] = True
    return mask.astype(np.uint8) * 255


def _best_of(fn: Any, arg: np.ndarray, repeats: int) -> tuple[float, list[int]]:
    best = float("inf")
    out: list[int] = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(arg)
        best = min(best, time.perf_counter() - start)
    return best, out


def run() -> list[Row]:
    """Best-of-N time of each encoder on the same mask; outputs must be identical."""
    mask = build_mask()
    baseline_s, expected = _best_of(mask2rle, mask, REPEATS)
    prelabel_s, got = _best_of(mask_to_rle, mask, REPEATS * 3)
    assert got == expected, "mask_to_rle output differs from SDK mask2rle"
    return [
        Row("P5", "brush RLE 4000x3000: SDK mask2rle / mask_to_rle", baseline_s, prelabel_s, baseline_s / prelabel_s,
            ">= 10x")
    ]  # fmt: skip
