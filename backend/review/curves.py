"""Predicted objects, each matched or not -> the numbers behind the report's pictures: score histograms and F1 curves.

A predicted object (rectangle, polygon, brush) is *accepted* when the annotation kept it (``backend.review.matching``:
same control and label, IoU >= 0.5), else *corrected* (deleted, moved or relabelled). Sweeping a score threshold
``t`` over the predictions keeps those scoring >= ``t``; because matching is greedy in descending score, dropping the
lower-scored objects never changes what the higher-scored ones matched, so each point of the curve is exact:
TP(t) = accepted objects scoring >= t, FP(t) = corrected ones scoring >= t, FN(t) = annotated objects - TP(t).
``Choices`` are left out: their answer is one per control, not a set of regions a threshold cuts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["BINS", "THRESHOLDS", "score_histogram", "threshold_curve"]

BINS = 10  # score histogram bins of width 0.1 over [0, 1]
THRESHOLDS = tuple(i / 20 for i in range(21))  # 0, 0.05, ..., 1: where the F1 curve is evaluated
_EPS = 1e-9  # a score printed as 0.35 and the threshold 0.35 must compare equal


def score_histogram(scored: Iterable[tuple[float, bool]]) -> dict[str, list]:
    """Counts of accepted and corrected objects per score bin (``edges`` has one more entry than each count list).

    Args:
        scored: ``(score, accepted)`` of each predicted object; a score outside [0, 1] goes into the end bin.
    """
    accepted, corrected = [0] * BINS, [0] * BINS
    for score, kept in scored:
        i = min(max(int(score * BINS + _EPS), 0), BINS - 1)
        (accepted if kept else corrected)[i] += 1
    return {"edges": [round(i / BINS, 2) for i in range(BINS + 1)], "accepted": accepted, "corrected": corrected}


def threshold_curve(
    scored: Iterable[tuple[float, bool]], annotated: int, marked: Mapping[str, object] | None = None
) -> dict[str, object]:
    """F1, precision and recall of one label at each of ``THRESHOLDS``, the best threshold, and the project's.

    Args:
        scored: ``(score, accepted)`` of each predicted object of the label.
        annotated: How many objects of the label the annotations hold.
        marked: The project's threshold for the label: ``{"threshold": t, "source": "calibrated" | "configured"}``.

    Returns:
        ``{"thresholds", "precision", "recall", "f1", "best", "project_threshold", "threshold_source"}``; a ratio with
        nothing to count is ``None``. ``best`` is the threshold with the highest F1 (the highest such one on a tie).
    """
    scored = list(scored)
    precision, recall, f1 = [], [], []
    for t in THRESHOLDS:
        kept = [accepted for score, accepted in scored if score >= t - _EPS]
        tp = sum(kept)
        p = round(tp / len(kept), 4) if kept else None
        r = round(tp / annotated, 4) if annotated else None
        precision.append(p)
        recall.append(r)
        f1.append(round(2 * tp / (len(kept) + annotated), 4) if kept or annotated else None)
    known = [(value, t) for value, t in zip(f1, THRESHOLDS, strict=True) if value is not None]
    return {
        "thresholds": list(THRESHOLDS),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "best": max(known)[1] if known else None,
        "project_threshold": None if marked is None else marked["threshold"],
        "threshold_source": None if marked is None else marked["source"],
    }
