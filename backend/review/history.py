"""Review reports over time -> one summary row per model version, so a reviewer sees whether a new version agrees more.

What enters: a review report (``backend.review.metrics``), whose summary numbers the service keeps in the store for
the version it reviewed; later, every kept summary of the project. What leaves: per version, the newest summary, when
it was first and last reviewed and how often, in the order the versions were first reviewed.

Summary numbers: annotations and tasks compared, agreement, share accepted unchanged, and micro-averaged precision and
recall over every label (all matched / all predicted, all matched / all annotated), choice accuracy over every
``Choices`` control (all correct / all compared).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["summary", "versions"]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a report worth comparing across versions."""
    labels, choices = report["labels"], report["choices"]
    matched = sum(r["matched"] for r in labels)
    return {
        "annotations": report["annotations"],
        "tasks": report["tasks"],
        "agreement": report["agreement"],
        "unchanged": report["unchanged"],
        "precision": _ratio(matched, sum(r["predicted"] for r in labels)),
        "recall": _ratio(matched, sum(r["annotated"] for r in labels)),
        "choice_accuracy": _ratio(sum(c["correct"] for c in choices), sum(c["compared"] for c in choices)),
    }


def versions(rows: Iterable[tuple[float, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per model version (first reviewed first): its newest summary, ``reports`` counted, ``first``/``last`` times."""
    out: dict[str, dict[str, Any]] = {}
    for at, version, numbers in rows:  # oldest first
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        seen = out.setdefault(version, {"model_version": version, "first": when, "reports": 0})
        seen.update(numbers, last=when, reports=seen["reports"] + 1)
    return list(out.values())


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
