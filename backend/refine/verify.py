"""Boxes + the image -> each box's crop classified among the labels and a background -> kept, dropped or relabelled.

A zero-shot detector scores a box by how well a region matches a phrase somewhere in the image; a classifier looking
at the crop alone is a second opinion that does not share its failure modes (context, text in the image, parts of
larger objects). Each crop (the box widened by ``margin`` of its size on every side, for context) is classified
among the labels' prompts plus the background prompts, all of an image's crops in one batch. The classifier's
scores become a distribution over the labels and "background" (softmax models: a class's prompts add up; sigmoid
models: a class takes its best prompt, then the classes are normalised to sum to 1).

The verdict per box: the best class is its label -> kept; background -> dropped; another label -> dropped
(``action="drop"``) or given that label (``"relabel"``). A kept box is re-scored as the geometric mean of its
detector score and the classifier's share of its (final) label: a box both models are sure of stays high, a box
either doubts sinks below the thresholds that follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv

from model_adapters.base import CLASS_NAME_DATA_FIELD
from model_adapters.classification import CALIBRATION

__all__ = ["Verification", "class_shares", "crops", "verdicts"]


@dataclass(frozen=True)
class Verification:
    """A target's crop verification.

    Attributes:
        plan: The classifier's ``TargetPlan``: its prompts are the labels' prompts then the background prompts;
            ``prompt_labels`` maps background prompts to ``len(labels)``.
        margin: Fraction of the box's width and height added on each side of the crop.
        action: What a box whose crop looks like another label becomes: ``"drop"`` or ``"relabel"``.
    """

    plan: Any
    margin: float = 0.1
    action: Literal["drop", "relabel"] = "drop"


def crops(pixels: np.ndarray, xyxy: np.ndarray, scale_xy: tuple[float, float], margin: float) -> list[np.ndarray]:
    """Each box's crop of ``pixels`` (boxes in original-image pixels, ``scale_xy`` from pixels to original)."""
    height, width = pixels.shape[:2]
    sx, sy = scale_xy
    out = []
    for x0, y0, x1, y1 in xyxy.tolist():
        dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
        left = int(np.clip(np.floor((x0 - dx) / sx), 0, width - 1))
        top = int(np.clip(np.floor((y0 - dy) / sy), 0, height - 1))
        right = int(np.clip(np.ceil((x1 + dx) / sx), left + 1, width))
        bottom = int(np.clip(np.ceil((y1 + dy) / sy), top + 1, height))
        out.append(np.ascontiguousarray(pixels[top:bottom, left:right]))
    return out


def class_shares(answer: sv.Detections, prompt_labels: tuple[int, ...], classes: int) -> np.ndarray:
    """A classifier's per-prompt rows for one crop -> a distribution over ``classes`` (labels, then background)."""
    scores = np.zeros(classes, dtype=np.float64)
    owners = np.asarray(prompt_labels)[answer.class_id]
    confidence = np.clip(answer.confidence.astype(np.float64), 0.0, None)
    if answer.metadata.get(CALIBRATION) == "sigmoid":
        np.maximum.at(scores, owners, confidence)
    else:
        np.add.at(scores, owners, confidence)
    total = scores.sum()
    return scores / total if total > 0 else np.full(classes, 1.0 / classes)


def verdicts(found: sv.Detections, shares: np.ndarray, labels: tuple[str, ...], action: str) -> sv.Detections:
    """Apply the verdicts (see the module docstring) to ``found`` (``class_id`` = label) given each box's shares."""
    if len(found) == 0:
        return found
    best = shares.argmax(axis=1)
    background = len(labels)
    keep = (best != background) & ((best == found.class_id) | (action == "relabel"))
    out = found[keep]
    chosen = best[keep]
    out.class_id = chosen.astype(int)
    out.confidence = np.sqrt(out.confidence * shares[keep, chosen]).astype(np.float32)
    out.data[CLASS_NAME_DATA_FIELD] = np.asarray([labels[i] for i in chosen], dtype=object)
    return out
