"""Model answers -> Label Studio result regions: rectangles, polygons, brush masks, choices.

Pure functions: pixels in, JSON-ready dicts out. Coordinates are clipped to the image and expressed in percent
of the displayed (EXIF-oriented) image, which is what Label Studio stores; brush masks use its RLE. Scores are
clipped to [0, 1].
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import supervision as sv

__all__ = [
    "brush_region",
    "choices_region",
    "detections_to_rectangles",
    "polygon_region",
    "region_id",
    "task_score",
]


def region_id() -> str:
    """A fresh region id in Label Studio's style (10 url-safe characters)."""
    return uuid.uuid4().hex[:10]


def detections_to_rectangles(
    detections: sv.Detections,
    labels: tuple[str, ...],
    *,
    image_wh: tuple[int, int],
    from_name: str,
    to_name: str,
) -> list[dict[str, Any]]:
    """Encode boxes as ``rectanglelabels`` regions.

    Args:
        detections: ``xyxy`` in pixels (N, 4), ``confidence`` (N,), ``class_id`` (N,) indexing ``labels``.
        labels: The control's label values.
        image_wh: (width, height) of the displayed image.
        from_name: The control's name.
        to_name: The image's name.

    Returns:
        One region per box that keeps a positive area after clipping, in the order given.

    Example:
        >>> det = sv.Detections(xyxy=np.array([[10.0, 20, 50, 60]]), confidence=np.array([0.9]), class_id=np.array([0]))
        >>> detections_to_rectangles(det, ("Cat",), image_wh=(100, 200), from_name="label", to_name="image")[0]["value"]
        {'x': 10.0, 'y': 10.0, 'width': 40.0, 'height': 20.0, 'rotation': 0, 'rectanglelabels': ['Cat']}
    """
    if len(detections) == 0:
        return []
    width, height = image_wh
    xyxy = np.clip(detections.xyxy.astype(np.float64), 0, [width, height, width, height])
    percent = xyxy / [width, height, width, height] * 100.0
    scores = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    regions = []
    for (x1, y1, x2, y2), score, class_id in zip(percent, scores, detections.class_id, strict=True):
        if x2 <= x1 or y2 <= y1:
            continue
        regions.append(
            {
                "id": region_id(),
                "from_name": from_name,
                "to_name": to_name,
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "score": _probability(score),
                "value": {
                    "x": float(x1),
                    "y": float(y1),
                    "width": float(x2 - x1),
                    "height": float(y2 - y1),
                    "rotation": 0,
                    "rectanglelabels": [labels[int(class_id)]],
                },
            }
        )
    return regions


def _probability(score: float) -> float:
    """A region score within [0, 1], as Label Studio expects; a last guard for models that overshoot (NaN is 0)."""
    return float(np.clip(np.nan_to_num(score), 0.0, 1.0))


def task_score(regions: list[dict[str, Any]]) -> float:
    """A task's prediction score: the mean of its region scores, 0 when it has none.

    Label Studio sorts tasks by this number, so low values surface uncertain or empty predictions first.
    """
    scores = [r["score"] for r in regions if "score" in r]
    return float(np.mean(scores)) if scores else 0.0


def _base_region(
    kind: str, from_name: str, to_name: str, image_wh: tuple[int, int], score: float, value: dict[str, Any]
) -> dict[str, Any]:
    width, height = image_wh
    return {
        "id": region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "score": _probability(score),
        "value": value,
    }


def polygon_region(
    points_xy: np.ndarray, label: str, score: float, *, image_wh: tuple[int, int], from_name: str, to_name: str
) -> dict[str, Any]:
    """A ``polygonlabels`` region from pixel points (N, 2), in percent of the image."""
    width, height = image_wh
    percent = np.clip(points_xy / [width, height] * 100.0, 0.0, 100.0)
    value = {"points": percent.round(4).tolist(), "closed": True, "polygonlabels": [label]}
    return _base_region("polygonlabels", from_name, to_name, image_wh, score, value)


def brush_region(mask: np.ndarray, label: str, score: float, *, from_name: str, to_name: str) -> dict[str, Any]:
    """A ``brushlabels`` region holding the mask (H, W) in Label Studio's RLE."""
    from backend.brush_rle import mask_to_rle

    height, width = mask.shape
    value = {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}
    return _base_region("brushlabels", from_name, to_name, (width, height), score, value)


def choices_region(labels: list[str], score: float, *, from_name: str, to_name: str) -> dict[str, Any]:
    """A ``choices`` region (whole-image classification)."""
    return {
        "id": region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": "choices",
        "score": _probability(score),
        "value": {"choices": labels},
    }
