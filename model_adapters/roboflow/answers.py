"""Roboflow's JSON answer for one image -> ``supervision.Detections`` in pixels of the image the adapter was given.

Enters: one answer as Roboflow documents it (object detection: centre-format pixel boxes; instance segmentation: the
same plus ``points``; single-label classification: ``predictions`` as a list with ``top``; multi-label: a
``predictions`` object keyed by class), the prompts, the task of the control, and the image. Leaves: detections
whose ``class_id`` indexes the prompts (boxes as ``xyxy``, outlines as masks; classifications as one whole-image row
per prompt, like the zero-shot classifiers), plus the class names no prompt matched.

Coordinates are in the uploaded image's pixels; the answer's ``image`` size (else the uploaded size) scales them
back. A class matches a prompt exactly, else after normalising (case, ``_``/``-`` as spaces, repeated spaces).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image, ImageDraw

from model_adapters.base import CLASS_NAME_DATA_FIELD
from model_adapters.classification import classification_detections
from model_adapters.roboflow.client import RoboflowError

__all__ = ["detections", "prompt_matcher"]


def prompt_matcher(prompts: Sequence[str]) -> Callable[[str], int | None]:
    """A class name -> the index of the first prompt it matches exactly, else after normalising, else ``None``."""
    exact: dict[str, int] = {}
    loose: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        exact.setdefault(prompt, i)
        loose.setdefault(_normalised(prompt), i)
    return lambda name: exact.get(name, loose.get(_normalised(name)))


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[_-]+", " ", text).casefold().split())


def detections(
    answer: dict[str, Any], *, task: str, prompts: Sequence[str], image: np.ndarray, upload_wh: tuple[int, int]
) -> tuple[sv.Detections, set[str]]:
    """One image's answer as detections, and the class names that matched no prompt.

    Raises:
        RoboflowError: The answer has an unexpected shape, or its kind does not fit the task (a classifier's answer
            for boxes, boxes for choices, boxes without outlines for polygons).
    """
    predictions = answer.get("predictions")
    match = prompt_matcher(prompts)
    if isinstance(predictions, dict):  # multi-label classification
        scores = {
            name: _number(p.get("confidence") if isinstance(p, dict) else None) for name, p in predictions.items()
        }
        return _classes(scores, task, prompts, image, "sigmoid", match)
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        raise RoboflowError(
            f"unexpected Roboflow answer: predictions must be a list or an object, got {_kind(predictions)}"
        )
    if predictions and "x" not in predictions[0]:  # single-label classification
        scores = {}
        for p in predictions:
            name = p.get("class", p.get("class_name"))
            if not isinstance(name, str):
                raise RoboflowError("unexpected Roboflow answer: a classification prediction without a class name")
            scores[name] = _number(p.get("confidence"))
        return _classes(scores, task, prompts, image, "softmax", match)
    if task == "classification":
        raise RoboflowError(
            "the Roboflow model answers boxes, not classes: use it for RectangleLabels or PolygonLabels"
        )
    return _objects(predictions, answer.get("image"), task, prompts, image, upload_wh, match)


def _classes(
    scores: dict[str, float],
    task: str,
    prompts: Sequence[str],
    image: np.ndarray,
    calibration: str,
    match: Callable[[str], int | None],
) -> tuple[sv.Detections, set[str]]:
    if task != "classification":
        raise RoboflowError("the Roboflow model is a classifier: use it for Choices, not for boxes or polygons")
    probabilities = np.zeros(len(prompts), dtype=np.float32)
    unmatched = set()
    for name, score in scores.items():
        index = match(name)
        if index is None:
            unmatched.add(name)
        else:
            probabilities[index] = max(probabilities[index], score)
    return classification_detections(probabilities, image, prompts, calibration), unmatched  # type: ignore[arg-type]


def _objects(
    predictions: list[dict[str, Any]],
    size: Any,
    task: str,
    prompts: Sequence[str],
    image: np.ndarray,
    upload_wh: tuple[int, int],
    match: Callable[[str], int | None],
) -> tuple[sv.Detections, set[str]]:
    height, width = image.shape[:2]
    answered_wh = upload_wh
    if isinstance(size, dict) and _number(size.get("width"), 0) > 0 and _number(size.get("height"), 0) > 0:
        answered_wh = (_number(size["width"]), _number(size["height"]))
    sx, sy = width / answered_wh[0], height / answered_wh[1]
    boxes, scores, ids, masks, unmatched = [], [], [], [], set()
    for p in predictions:
        name = p.get("class")
        index = match(name) if isinstance(name, str) else None
        if index is None:
            unmatched.add(str(name))
            continue
        cx, cy, w, h = (_number(p.get(k)) for k in ("x", "y", "width", "height"))
        if task == "segmentation":
            points = p.get("points")
            if not isinstance(points, list):
                raise RoboflowError(
                    "the Roboflow model answers boxes without outlines (object detection): use it for RectangleLabels"
                )
            outline = [(_number(q.get("x")) * sx, _number(q.get("y")) * sy) for q in points if isinstance(q, dict)]
            if len(outline) < 3:
                continue
            masks.append(_filled(outline, width, height))
        boxes.append([(cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy])
        scores.append(_number(p.get("confidence")))
        ids.append(index)
    found = sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        mask=np.stack(masks) if masks else (np.zeros((0, height, width), bool) if task == "segmentation" else None),
        confidence=np.asarray(scores, dtype=np.float32),
        class_id=np.asarray(ids, dtype=int),
        data={CLASS_NAME_DATA_FIELD: np.asarray([prompts[i] for i in ids], dtype=object)},
    )
    return found, unmatched


def _filled(outline: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """A polygon (pixel vertices) as an (H, W) bool mask: the pixels whose centre it covers, as PIL draws it."""
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(outline, fill=1)
    return np.asarray(canvas, dtype=bool)


def _number(value: Any, default: float | None = None) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if default is not None:
        return default
    raise RoboflowError(f"unexpected Roboflow answer: a number was expected, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
