"""Two region lists of one task (a prediction and an annotation, or two predictions) -> what matches what.

Objects (rectangles, polygons, brush masks) match per control and label, greedily in descending prediction score,
each taking its best free counterpart at IoU >= 0.5 (box IoU for rectangles, mask IoU on the learning grid for
polygons and brushes): the rule detection benchmarks use and the one threshold calibration uses. A ``Choices``
control matches when both chose the same set of labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.learning.examples import region_shape
from backend.learning.heads import box_iou, greedy_matches

__all__ = ["MATCH_IOU", "ChoiceMatch", "Matching", "ObjectMatch", "match_regions"]

MATCH_IOU = 0.5
_OBJECTS = ("rectanglelabels", "polygonlabels", "brushlabels")


@dataclass(frozen=True)
class ObjectMatch:
    """One object of either side: matched (both), only predicted (a false positive) or only annotated (missed).

    Attributes:
        control: The control's name (``from_name``).
        label: Its label.
        score: The predicted region's score (``None`` for an object only the annotation has).
        predicted: Whether the prediction has it.
        annotated: Whether the annotation has it.
        iou: IoU of a matched pair (``None`` otherwise).
    """

    control: str
    label: str
    score: float | None
    predicted: bool
    annotated: bool
    iou: float | None = None


@dataclass(frozen=True)
class ChoiceMatch:
    """A ``Choices`` control as predicted and as annotated (an empty set: that side has no answer)."""

    control: str
    predicted: frozenset[str]
    annotated: frozenset[str]
    score: float | None = None

    @property
    def equal(self) -> bool:
        """Whether both chose the same labels."""
        return self.predicted == self.annotated


@dataclass(frozen=True)
class Matching:
    """Everything two region lists of one task have in common and not."""

    objects: tuple[ObjectMatch, ...] = field(default=())
    choices: tuple[ChoiceMatch, ...] = field(default=())

    def agreement(self) -> float:
        """``2 x matched / (items of one side + items of the other)``: 1 when both are equal (or both empty).

        An item is an object, or a ``Choices`` control that one side answers; equal choices are one matched item.
        """
        matched = sum(o.predicted and o.annotated for o in self.objects)
        items = sum(o.predicted for o in self.objects) + sum(o.annotated for o in self.objects)
        for choice in self.choices:
            items += bool(choice.predicted) + bool(choice.annotated)
            matched += choice.equal and bool(choice.predicted)
        return 1.0 if items == 0 else 2.0 * matched / items

    def unchanged(self, iou: float = 0.99) -> bool:
        """Whether the annotation kept the prediction as it was: nothing added or deleted, no choice or shape changed."""
        return all(o.predicted and o.annotated and (o.iou or 0.0) >= iou for o in self.objects) and all(
            c.equal for c in self.choices
        )


def match_regions(predicted: Iterable[Mapping[str, Any]], annotated: Iterable[Mapping[str, Any]]) -> Matching:
    """Match a prediction's regions against an annotation's (or another prediction's) regions of one task."""
    predicted, annotated = list(predicted), list(annotated)
    objects: list[ObjectMatch] = []
    keys = {(r.get("from_name"), r.get("type"), label) for r in [*predicted, *annotated] for label in _labels(r)}
    for control, kind, label in sorted(keys, key=str):
        if kind not in _OBJECTS:
            continue
        mine = [_shape(r, kind) for r in predicted if _is(r, control, kind, label)]
        theirs = [_shape(r, kind) for r in annotated if _is(r, control, kind, label)]
        mine = [s for s in mine if s is not None]
        theirs = [s for s in theirs if s is not None]
        objects += _pair(str(control), str(label), mine, theirs, masks=kind != "rectanglelabels")
    choices = []
    controls = sorted({r.get("from_name") for r in [*predicted, *annotated] if r.get("type") == "choices"}, key=str)
    for control in controls:
        guess = [r for r in predicted if r.get("type") == "choices" and r.get("from_name") == control]
        truth = [r for r in annotated if r.get("type") == "choices" and r.get("from_name") == control]
        score = _finite(guess[0].get("score")) if guess else None
        choices.append(ChoiceMatch(str(control), frozenset(_labels_of(guess)), frozenset(_labels_of(truth)), score))
    return Matching(tuple(objects), tuple(choices))


def _pair(
    control: str, label: str, mine: Sequence[tuple], theirs: Sequence[tuple], *, masks: bool
) -> list[ObjectMatch]:
    scores = np.asarray([score for score, _, _ in mine], dtype=np.float64)
    if masks:
        iou = _mask_iou([m for _, _, m in mine], [m for _, _, m in theirs])
    else:
        iou = box_iou(
            np.asarray([b for _, b, _ in mine]).reshape(-1, 4), np.asarray([b for _, b, _ in theirs]).reshape(-1, 4)
        )
    matched = greedy_matches(scores, iou, MATCH_IOU)
    # greedy_matches says which predictions matched; recover their partners the same way (descending score).
    free = np.ones(len(theirs), dtype=bool)
    out = []
    for i in np.argsort(-scores, kind="stable"):
        if matched[i]:
            j = int(np.where(free & (iou[i] >= MATCH_IOU), iou[i], -1.0).argmax())
            free[j] = False
            out.append(ObjectMatch(control, label, float(scores[i]), True, True, float(iou[i, j])))
        else:
            out.append(ObjectMatch(control, label, float(scores[i]), True, False))
    out += [ObjectMatch(control, label, None, False, True) for j in np.nonzero(free)[0]]
    return out


def _mask_iou(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if x.shape == y.shape:
                union = np.logical_or(x, y).sum()
                out[i, j] = np.logical_and(x, y).sum() / union if union else 0.0
    return out


def _shape(region: Mapping[str, Any], kind: str) -> tuple[float, list[float], np.ndarray] | None:
    if not isinstance(region.get("value"), dict):
        return None
    shape = region_shape(region, kind)
    if shape is None:
        return None
    score = _finite(region.get("score"))
    return (1.0 if score is None else score), shape[0], shape[1]


def _labels(region: Mapping[str, Any]) -> list[str]:
    value = region.get("value")
    labels = value.get(region.get("type"), []) if isinstance(value, dict) else []
    return [label for label in labels if isinstance(label, str)] if isinstance(labels, list) else []


def _labels_of(regions: Iterable[Mapping[str, Any]]) -> list[str]:
    return [label for region in regions for label in _labels(region)]


def _is(region: Mapping[str, Any], control: Any, kind: str, label: str) -> bool:
    return region.get("from_name") == control and region.get("type") == kind and label in _labels(region)


def _finite(score: object) -> float | None:
    """A stored region score as a number in [0, 1], or ``None`` when there is none (or it is NaN or infinite)."""
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return None
    return min(max(float(score), 0.0), 1.0)
