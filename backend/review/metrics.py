"""Annotations matched with predictions -> the review numbers: per label, per ``Choices`` control, per annotator.

Counting rules (the README's "Review" section says the same for users):

- Objects (rectangles, polygons, brushes), per control and label: a predicted object matched to an annotated one
  (``backend.review.matching``, IoU >= 0.5) is a true positive, an unmatched predicted one a false positive, an
  unmatched annotated one a false negative. Precision = TP / (TP + FP), recall = TP / (TP + FN), mean IoU over TPs.
- Choices, per label: a label both chose is a TP, one only the model chose a FP, one only the annotator chose a FN.
  Per control, accuracy is the share of annotations answering it whose choice set equals the prediction's; the
  confusion matrix counts (annotated answer, predicted answer) over those annotations.
- Per annotation: ``agreement`` (``Matching.agreement``: 2 x matched / all items of both sides) and whether the
  prediction was accepted unchanged (``Matching.unchanged``); per annotator and overall, their means.

A ratio with nothing to count is ``None`` (shown as "-"), never 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.review.curves import score_histogram, threshold_curve
from backend.review.fetch import Pair, Skipped
from backend.review.matching import Matching, match_regions

__all__ = ["DISAGREEING_TASKS", "DISAGREEMENTS_SHOWN", "NO_ANSWER", "review_report"]

DISAGREEMENTS_SHOWN = 20
DISAGREEING_TASKS = 50  # the "Model disagrees" tab's tasks (Label Studio gets one filter row per task)
NO_ANSWER = "(none)"  # the model gave no answer to a Choices control the annotator answered


@dataclass
class _Label:
    kind: str
    matched: int = 0
    predicted: int = 0
    annotated: int = 0
    ious: list[float] = field(default_factory=list)
    scored: list[tuple[float, bool]] = field(default_factory=list)  # each predicted object: (score, accepted)


@dataclass
class _Annotator:
    agreements: list[float] = field(default_factory=list)
    unchanged: int = 0


def review_report(
    pairs: Iterable[Pair],
    skipped: Skipped,
    *,
    project: int,
    version: str | None,
    link: Callable[[int], str],
    thresholds: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report (plain JSON) over every pair; ``link(task_id)`` is where the task opens in Label Studio.

    ``thresholds`` maps ``(control, label)`` to the project's score threshold for it
    (``{"threshold": t, "source": "calibrated" | "configured"}``), marked on that label's threshold curve.
    """
    labels: dict[tuple[str, str], _Label] = {}
    confusion: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    annotators: dict[str, _Annotator] = defaultdict(_Annotator)
    tasks, versions, worst = set(), Counter(), []
    for pair in pairs:
        matching = match_regions(pair.predicted, pair.annotation.result)
        _count(matching, labels, confusion)
        agreement, unchanged = matching.agreement(), matching.unchanged()
        person = annotators[pair.annotator]
        person.agreements.append(agreement)
        person.unchanged += unchanged
        tasks.add(pair.annotation.task_id)
        versions[pair.model_version] += 1
        if agreement < 1.0:
            worst.append((agreement, pair.annotation.task_id, pair.annotation.id, pair.annotator))
    marks = thresholds or {}
    everyone = [a for person in annotators.values() for a in person.agreements]
    worst.sort()
    return {
        "project": project,
        "model_version": version,
        "compared_versions": dict(versions.most_common()),
        "annotations": len(everyone),
        "tasks": len(tasks),
        "skipped": {
            "cancelled": skipped.cancelled,
            "no_prediction": skipped.no_prediction,
            "unreadable": skipped.unreadable,
        },
        "agreement": _mean(everyone),
        "unchanged": _ratio(sum(p.unchanged for p in annotators.values()), len(everyone)),
        "labels": [_label_row(control, label, tally) for (control, label), tally in sorted(labels.items())],
        "score_histogram": score_histogram(s for tally in labels.values() for s in tally.scored),
        "threshold_curves": [
            {"control": key[0], "label": key[1], **threshold_curve(t.scored, t.annotated, marks.get(key))}
            for key, t in sorted(labels.items())
            if t.kind == "objects" and t.scored
        ],
        "choices": [_choice_row(control, confusion[control]) for control in sorted(confusion)],
        "annotators": [
            {
                "annotator": name,
                "annotations": len(p.agreements),
                "agreement": _mean(p.agreements),
                "unchanged": _ratio(p.unchanged, len(p.agreements)),
            }
            for name, p in sorted(annotators.items())
        ],
        "disagreements": [
            {
                "task": task,
                "annotation": annotation,
                "annotator": name,
                "agreement": round(agreement, 4),
                "url": link(task),
            }
            for agreement, task, annotation, name in worst[:DISAGREEMENTS_SHOWN]
        ],
        # each task once, at its least agreeing annotation; ties by task id
        "disagreeing_tasks": list(dict.fromkeys(task for _, task, _, _ in worst))[:DISAGREEING_TASKS],
    }


def _count(matching: Matching, labels: dict[tuple[str, str], _Label], confusion: dict[str, Counter]) -> None:
    for o in matching.objects:
        tally = labels.setdefault((o.control, o.label), _Label("objects"))
        tally.predicted += o.predicted
        tally.annotated += o.annotated
        if o.predicted and o.score is not None:
            tally.scored.append((o.score, o.annotated))
        if o.predicted and o.annotated:
            tally.matched += 1
            tally.ious.append(o.iou or 0.0)
    for c in matching.choices:
        for label in c.predicted | c.annotated:
            tally = labels.setdefault((c.control, label), _Label("choices"))
            tally.predicted += label in c.predicted
            tally.annotated += label in c.annotated
            tally.matched += label in c.predicted and label in c.annotated
        if c.annotated:
            confusion[c.control][(_answer(c.annotated), _answer(c.predicted))] += 1


def _label_row(control: str, label: str, t: _Label) -> dict[str, Any]:
    return {
        "control": control, "label": label, "kind": t.kind,
        "predicted": t.predicted, "annotated": t.annotated, "matched": t.matched,
        "precision": _ratio(t.matched, t.predicted), "recall": _ratio(t.matched, t.annotated),
        "mean_iou": _mean(t.ious) if t.kind == "objects" else None,
    }  # fmt: skip


def _choice_row(control: str, counts: Counter[tuple[str, str]]) -> dict[str, Any]:
    answers = sorted({a for a, _ in counts} | {p for _, p in counts} - {NO_ANSWER})
    columns = answers + ([NO_ANSWER] if any(p == NO_ANSWER for _, p in counts) else [])
    total = sum(counts.values())
    correct = sum(n for (a, p), n in counts.items() if a == p)
    return {
        "control": control,
        "compared": total,
        "correct": correct,
        "accuracy": _ratio(correct, total),
        "annotated": answers,  # the matrix's rows
        "predicted": columns,  # its columns
        "matrix": [[counts[(a, p)] for p in columns] for a in answers],
    }


def _answer(labels: frozenset[str]) -> str:
    return " + ".join(sorted(labels)) if labels else NO_ANSWER


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
