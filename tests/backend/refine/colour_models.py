"""Models that really look at pixels, with answers known by construction: the refine stages are tested on them.

``ColourDetector`` finds solid squares of the colours its prompts name, on its input shrunk to at most 512 px a
side (as real detectors shrink theirs), so a small square in a large image blurs away unless the image is tiled.
``ColourClassifier`` tells which named colour covers most of an image's coloured pixels; gray is "background"
and white is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import supervision as sv

from model_adapters.base import Adapter, Query, ResizeRule, Task
from model_adapters.classification import classification_detections
from model_adapters.registry import register_adapter

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "maroon": (128, 0, 0),
    "yellow": (255, 255, 0),
}
GRAY = (128, 128, 128)
INPUT_SIDE = 512
TOLERANCE = 10


def colour_mask(pixels: np.ndarray, name: str) -> np.ndarray:
    colour = GRAY if name == "background" else COLOURS[name]
    return np.all(np.abs(pixels.astype(int) - colour) <= TOLERANCE, axis=-1)


@dataclass(frozen=True)
class ColourParams:
    score_threshold: float = 0.0
    score: float = 0.8  # every square found scores this
    shift: float = 0.0  # pixels added to every box's x coordinates (a detector that is a little off)


class _Stages:
    def preprocess(self, images: Sequence[np.ndarray], query: Query) -> dict[str, Any]:
        return {}

    def _forward(self, batch: Any) -> Any:
        return None


@register_adapter
class ColourDetector(_Stages, Adapter[ColourParams]):
    name = "test_colour_detector"
    task = Task.DETECTION
    variants = {"default": "test/colour", "other": "test/colour-other"}
    default_variant = "default"
    Params = ColourParams
    max_batch_size = 8
    inputs: list[tuple[int, ...]] = []  # shapes of every image it was given

    def load(self) -> None:
        self.resize_rule = ResizeRule(longest=INPUT_SIDE)

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        type(self).inputs.extend(image.shape for image in images)
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        params: ColourParams = query.params
        out = []
        for image in images:
            height, width = image.shape[:2]
            scale = min(1.0, INPUT_SIDE / max(height, width))
            small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            boxes, ids = [], []
            for i, prompt in enumerate(query.prompts):
                if prompt not in COLOURS:
                    continue
                count, _, stats, _ = cv2.connectedComponentsWithStats(colour_mask(small, prompt).astype(np.uint8))
                for x, y, w, h, area in stats[1:count]:
                    if area >= 4:
                        boxes.append(np.asarray([x + params.shift * scale, y, x + w + params.shift * scale, y + h]))
                        ids.append(i)
            xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
            out.append(sv.Detections(xyxy, confidence=np.full(len(ids), params.score), class_id=np.asarray(ids, int)))
        return out


@dataclass(frozen=True)
class _NoParams:
    pass


@register_adapter
class ColourClassifier(_Stages, Adapter[_NoParams]):
    """Probability of each prompt: its colour's share of the coloured (named or gray) pixels of the image."""

    name = "test_colour_classifier"
    task = Task.CLASSIFICATION
    variants = {"default": "test/colour-classifier"}
    default_variant = "default"
    Params = _NoParams
    max_batch_size = 4
    batches: list[int] = []

    def load(self) -> None:
        pass

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        type(self).batches.append(len(images))
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        out = []
        for image in images:
            counts = np.asarray(
                [colour_mask(image, p).sum() if p in COLOURS or p == "background" else 0 for p in query.prompts]
            )
            p = counts / max(counts.sum(), 1)
            out.append(classification_detections(p, image, query.prompts, "softmax"))
        return out
