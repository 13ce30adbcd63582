"""A review report -> Prometheus gauges at ``/metrics`` (project, model version, control, label, metric).

A number the report leaves empty (nothing to count) is not set, so a dashboard shows a gap, not a false 0.
"""

from __future__ import annotations

from typing import Any

from backend.metrics import REVIEW_LABEL, REVIEW_PROJECT

__all__ = ["publish"]


def publish(report: dict[str, Any]) -> None:
    """Set the gauges from one report."""
    project, version = str(report["project"]), report["model_version"] or ""
    for row in report["labels"]:
        for metric in ("precision", "recall", "mean_iou"):
            if row[metric] is not None:
                REVIEW_LABEL.labels(project, version, row["control"], row["label"], metric).set(row[metric])
    for metric in ("agreement", "unchanged", "annotations"):
        if report[metric] is not None:
            REVIEW_PROJECT.labels(project, version, "", metric).set(report[metric])
    for choice in report["choices"]:
        if choice["accuracy"] is not None:
            REVIEW_PROJECT.labels(project, version, choice["control"], "accuracy").set(choice["accuracy"])
