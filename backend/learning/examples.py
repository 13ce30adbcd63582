"""Annotations + the label config's targets -> training examples, per control.

One annotation teaches per task: the task's ground-truth annotation if it has one, else its most recently updated
one (several annotators on one task would otherwise count it several times). Skipped (cancelled) annotations teach
nothing. A submitted annotation with no region for a box control says the image holds none of its labels: every
box predicted there is a false positive, which calibration needs to see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from backend.label_config import Target
from backend.learning.events import Annotation
from model_adapters.base import Task

__all__ = [
    "MASK_GRID",
    "BoxExample",
    "ChoiceExample",
    "ImageRef",
    "box_examples",
    "choice_examples",
    "region_shape",
    "teaching",
]

# Masks are compared on a grid this many cells on the long side: enough to rank thresholds, small to keep.
MASK_GRID = 128
# Larger brush masks are not decoded for calibration (decoding holds 4 bytes per pixel).
MAX_MASK_PIXELS = 50_000_000


@dataclass(frozen=True)
class ImageRef:
    """A task's image, as its data refers to it."""

    task_id: int
    value: str


@dataclass(frozen=True)
class ChoiceExample:
    """A ``Choices`` answer: the label indices chosen for the image."""

    image: ImageRef
    labels: frozenset[int]


@dataclass(frozen=True)
class BoxExample:
    """The objects annotated on one image for a box or mask control.

    Attributes:
        image: The task's image.
        labels: Label index per object.
        boxes: ``(N, 4)`` xyxy in percent of the image.
        masks: ``(N, h, w)`` bool on a ``MASK_GRID`` grid, for ``PolygonLabels``/``BrushLabels``; else ``None``.
        parent_prediction: The prediction the annotator started from (its boxes they deleted are negatives).
    """

    image: ImageRef
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None = None
    parent_prediction: int | None = None


def teaching(annotations: Iterable[Annotation]) -> list[Annotation]:
    """The annotation that teaches for each task (ground truth first, then the newest), skipped ones left out."""
    chosen: dict[int, Annotation] = {}
    for annotation in annotations:
        if annotation.cancelled:
            continue
        current = chosen.get(annotation.task_id)
        rank = (annotation.ground_truth, annotation.updated_at, annotation.id)
        if current is None or rank > (current.ground_truth, current.updated_at, current.id):
            chosen[annotation.task_id] = annotation
    return sorted(chosen.values(), key=lambda a: a.task_id)


def choice_examples(target: Target, annotations: Iterable[Annotation]) -> list[ChoiceExample]:
    """One example per task whose teaching annotation answers this ``Choices`` control."""
    examples = []
    for annotation in teaching(annotations):
        image = _image(annotation, target)
        chosen = {
            target.labels.index(choice)
            for region in _regions(annotation, target, "choices")
            for choice in region["value"].get("choices", [])
            if choice in target.labels
        }
        if image is not None and chosen:
            examples.append(ChoiceExample(image, frozenset(chosen)))
    return examples


def box_examples(target: Target, annotations: Iterable[Annotation]) -> list[BoxExample]:
    """One example per annotated task for a box or mask control (possibly with no object)."""
    kind = {"RectangleLabels": "rectanglelabels", "PolygonLabels": "polygonlabels", "BrushLabels": "brushlabels"}
    key = kind[target.control_type]
    masks_wanted = target.task is Task.SEGMENTATION
    examples = []
    for annotation in teaching(annotations):
        image = _image(annotation, target)
        if image is None:
            continue
        labels, boxes, masks = [], [], []
        for region in _regions(annotation, target, key):
            label = (region["value"].get(key) or [None])[0]
            if label not in target.labels:
                continue
            shape = region_shape(region, key)
            if shape is None:
                continue
            box, mask = shape
            labels.append(target.labels.index(label))
            boxes.append(box)
            masks.append(mask)
        examples.append(
            BoxExample(
                image,
                np.asarray(labels, dtype=int),
                np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                (np.stack(masks) if masks else np.zeros((0, 1, 1), dtype=bool)) if masks_wanted else None,
                annotation.parent_prediction,
            )
        )
    return examples


def _image(annotation: Annotation, target: Target) -> ImageRef | None:
    value = annotation.task_data.get(target.value_key)
    return ImageRef(annotation.task_id, value) if isinstance(value, str) and value else None


def _regions(annotation: Annotation, target: Target, kind: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in annotation.result
        if r.get("from_name") == target.control
        and r.get("to_name") == target.to_name
        and r.get("type", kind) == kind
        and isinstance(r.get("value"), dict)
    ]


def region_shape(region: Mapping[str, Any], kind: str) -> tuple[list[float], np.ndarray] | None:
    """A region's box (percent xyxy) and, for masks, its mask on the ``MASK_GRID`` grid."""
    value = region["value"]
    try:
        if kind == "rectanglelabels":
            size = (float(region.get("original_width") or 100), float(region.get("original_height") or 100))
            return _rectangle(value, size), np.zeros((1, 1), dtype=bool)
        width, height = int(region["original_width"]), int(region["original_height"])
        if not (width > 0 and height > 0 and width * height <= MAX_MASK_PIXELS):
            return None
        grid = _grid(width, height)
        if kind == "polygonlabels":
            points = np.asarray(value["points"], dtype=np.float64).reshape(-1, 2)
            mask = np.zeros(grid[::-1], dtype=np.uint8)
            cv2.fillPoly(mask, [np.round(points / 100 * grid).astype(np.int32)], 1)
        else:
            from label_studio_sdk.converter.brush import decode_rle

            rle = value["rle"]
            if int.from_bytes(bytes(rle[:4]), "big") != 4 * width * height:  # the size it declares, before decoding
                return None
            full = np.reshape(decode_rle(rle), (height, width, 4))[:, :, 3] > 0
            mask = cv2.resize(full.astype(np.uint8), grid, interpolation=cv2.INTER_NEAREST)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return None
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = [xs.min() / grid[0] * 100, ys.min() / grid[1] * 100, (xs.max() + 1) / grid[0] * 100,
           (ys.max() + 1) / grid[1] * 100]  # fmt: skip
    return box, mask.astype(bool)


def _rectangle(value: Mapping[str, Any], size_wh: tuple[float, float]) -> list[float]:
    """Percent xyxy of a rectangle's bounding box; Label Studio rotates it about its top-left corner, in pixels."""
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    angle = math.radians(float(value.get("rotation") or 0.0))
    if not angle:
        return [x, y, x + w, y + h]
    scale = np.asarray(size_wh) / 100
    corners = np.asarray([[0, 0], [w, 0], [w, h], [0, h]]) * scale
    rotation = np.asarray([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    turned = (corners @ rotation.T) / scale + [x, y]
    return [*turned.min(axis=0).tolist(), *turned.max(axis=0).tolist()]


def _grid(width: int, height: int) -> tuple[int, int]:
    """(w, h) of the comparison grid for an image of this size."""
    scale = MASK_GRID / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
