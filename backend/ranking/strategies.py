"""Evidence -> per-item certainties -> a task score in [0, 1]; low = label it next.

An *item* is what an annotator would check: a box or mask, a ``Choices`` control with one choice, or one label of
a ``Choices`` control with ``choice="multiple"`` (a yes/no decision each). Per strategy (``p`` the per-label
probabilities of a single-choice control, scaled to sum 1; ``s`` a score; ``t`` the threshold it had to reach):

================== =============================================== ================================= ===========
strategy           boxes and masks                                 single choice / multiple choice   task
================== =============================================== ================================= ===========
confidence         the region scores (the score Label Studio shows, as before this setting)          mean
least_confidence   ``s``                                           ``max(p)`` / ``max(s, 1 - s)``    min
margin             ``(s - t) / (1 - t)``: the way above the bar    ``p1 - p2`` / ``|2s - 1|``        min
entropy            ``1 - H2(s)`` (binary entropy, bits)            ``1 - H(p) / ln L`` / ``1 - H2(s)`` mean
close_to_threshold ``|s - t| / max(t, 1 - t)``                     ``p1 - p2`` / ``|s - t| / max(t, 1 - t)`` min
disagreement       ensemble: members that found it / members       (see ``agreement``)               mean
================== =============================================== ================================= ===========

A task with no item scores 0 (nothing was found: a person should look), except that an ensemble in which no member
found anything agrees fully (1). ``disagreement`` without an ensemble compares the project's learned version with
its zero-shot version on the same task (``agreement``: 2 x matched / all regions of both, boxes matched per label
at IoU 0.5, a changed choice unmatched); with neither, it falls back to ``least_confidence``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from backend.encode import task_score as mean_region_score
from backend.ranking.evidence import BoxEvidence, ChoiceEvidence, Evidence
from backend.review.matching import match_regions

__all__ = ["agreement", "boosted", "certainties", "label_counts", "rank_score"]

_MIN = frozenset({"least_confidence", "margin", "close_to_threshold"})


def rank_score(strategy: str, evidence: Sequence[Evidence], regions: Sequence[Mapping[str, Any]]) -> float:
    """A task's score under ``strategy`` from its controls' evidence (``regions``: what was predicted)."""
    if strategy == "confidence":
        return mean_region_score(list(regions))
    if strategy == "disagreement" and not any(isinstance(e, BoxEvidence) and e.ensemble > 1 for e in evidence):
        strategy = "least_confidence"  # no second opinion in this prediction (the service may supply one)
    items = np.concatenate([certainties(strategy, e) for e in evidence]) if evidence else np.zeros(0)
    if items.size == 0:
        return 0.0
    score = items.min() if strategy in _MIN else items.mean()
    return float(np.clip(score, 0.0, 1.0))


def certainties(strategy: str, evidence: Evidence) -> np.ndarray:
    """Per-item certainties in [0, 1] (see the module docstring)."""
    if isinstance(evidence, ChoiceEvidence):
        return _choices(strategy, evidence)
    s, t = evidence.scores, evidence.thresholds
    if strategy == "disagreement":
        if evidence.ensemble <= 1:
            return np.zeros(0)
        if len(s) == 0:
            return np.ones(1)  # every member found nothing: they agree
        return np.clip(evidence.members / evidence.ensemble, 0.0, 1.0)
    if strategy == "least_confidence":
        return s
    if strategy == "margin":
        return np.clip((s - t) / np.maximum(1.0 - t, 1e-9), 0.0, 1.0)
    if strategy == "entropy":
        return 1.0 - _binary_entropy(s)
    if strategy == "close_to_threshold":
        return np.abs(s - t) / np.maximum(np.maximum(t, 1.0 - t), 1e-9)
    raise ValueError(f"unknown strategy {strategy!r}")


def _choices(strategy: str, evidence: ChoiceEvidence) -> np.ndarray:
    s, t = evidence.scores, evidence.thresholds
    if strategy == "disagreement":
        return np.zeros(0)
    if evidence.multiple:
        return {
            "least_confidence": lambda: np.maximum(s, 1.0 - s),
            "margin": lambda: np.abs(2.0 * s - 1.0),
            "entropy": lambda: 1.0 - _binary_entropy(s),
            "close_to_threshold": lambda: np.abs(s - t) / np.maximum(np.maximum(t, 1.0 - t), 1e-9),
        }[strategy]()
    total = s.sum()
    p = s / total if total > 0 else np.full(len(s), 1.0 / max(len(s), 1))
    top = np.sort(p)[::-1]
    if strategy == "least_confidence":
        return top[:1]
    if strategy in ("margin", "close_to_threshold"):
        return np.asarray([top[0] - (top[1] if len(top) > 1 else 0.0)])
    if strategy == "entropy":
        if len(p) < 2:
            return np.ones(1)
        nonzero = p[p > 0]
        return np.asarray([1.0 + float((nonzero * np.log(nonzero)).sum()) / np.log(len(p))])
    raise ValueError(f"unknown strategy {strategy!r}")


def _binary_entropy(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(s * np.log2(s) + (1 - s) * np.log2(1 - s))


def agreement(one: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]]) -> float:
    """How far two predictions of one task agree: 2 x matched items / items of both (1: the same; 0: nothing shared).

    Boxes and masks match per label at IoU 0.5; a ``Choices`` control matches when both chose the same labels.
    """
    return match_regions(one, other).agreement()


def label_counts(results: Iterable[Sequence[Mapping[str, Any]]]) -> Counter[tuple[str, str]]:
    """How many annotated regions (or choices) each ``(control, label)`` has in these annotation results."""
    counts: Counter[tuple[str, str]] = Counter()
    for result in results:
        for region in result:
            value = region.get("value")
            labels = value.get(region.get("type"), []) if isinstance(value, dict) else []
            for label in labels if isinstance(labels, list) else []:
                if isinstance(label, str):
                    counts[(str(region.get("from_name")), label)] += 1
    return counts


def boosted(
    score: float,
    regions: Sequence[Mapping[str, Any]],
    counts: Mapping[tuple[str, str], int],
    labels: Mapping[str, Sequence[str]],
    boost: float,
) -> float:
    """``score x (1 - boost x rarity)``: a task that likely holds a rarely annotated label moves towards 0 (first).

    A label's rarity is ``1 - count / the control's most annotated label's count`` (a label nobody annotated: 1);
    a task's rarity is the largest ``rarity x region score`` among its predicted regions (how likely it holds it).
    Without any annotation of a control, its labels are not told apart (rarity 0).

    Args:
        score: The strategy's task score.
        regions: The task's predicted regions.
        counts: Annotated regions per ``(control, label)`` (``label_counts``).
        labels: Each control's labels.
        boost: ``active_learning.rare_boost``.
    """
    if boost <= 0:
        return score
    rarest = 0.0
    for region in regions:
        control = str(region.get("from_name"))
        most = max((counts.get((control, label), 0) for label in labels.get(control, ())), default=0)
        if most == 0:
            continue
        value = region.get("value")
        found = value.get(region.get("type"), []) if isinstance(value, dict) else []
        for label in found if isinstance(found, list) else []:
            rarity = 1.0 - counts.get((control, str(label)), 0) / most
            rarest = max(rarest, rarity * float(region.get("score", 1.0)))
    return float(np.clip(score * (1.0 - boost * rarest), 0.0, 1.0))
