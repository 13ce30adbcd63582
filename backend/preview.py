"""A project's settings + a few of its tasks -> their regions and each label's score distribution; nothing written.

What enters: the tasks (as Label Studio's task API returns them) and the runner's answer for each; what leaves: a
report a person tunes thresholds with before a bulk run::

    {"model_version": "...", "tasks": [{"id": 7, "regions": 3, "score": 0.61, "result": [...]}],
     "labels": {"label": {"Car": {"count": 5, "min": .., "p25": .., "median": .., "p75": .., "max": ..,
                                  "histogram": [10 counts over 0-0.1, ..., 0.9-1]}}},
     "failed": {"8": ["why"]}}

Label Studio is only read (the tasks); predictions go back to the caller, never into Label Studio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backend.log_redaction import redact
from backend.ls_client import LabelStudioClient
from backend.runner import Outcome

__all__ = ["HISTOGRAM_BINS", "MAX_TASKS", "first_tasks", "report"]

HISTOGRAM_BINS = 10  # over [0, 1]
MAX_TASKS = 50  # a preview stays within one request's time budget


def first_tasks(ls: LabelStudioClient, project_id: int, count: int) -> list[dict[str, Any]]:
    """The project's first ``count`` tasks, in Label Studio's order (by id; ``GET /api/tasks``).

    Raises:
        LabelStudioAPIError: Label Studio could not be asked; the message names the call.
    """
    params = {"project": project_id, "page": 1, "page_size": count, "fields": "all"}
    body = ls.get_json("/api/tasks", params)
    tasks = body.get("tasks", []) if isinstance(body, dict) else body
    return [t for t in tasks or [] if isinstance(t, dict) and isinstance(t.get("data"), dict)][:count]


def report(tasks: Sequence[dict[str, Any]], outcome: Outcome, model_version: str) -> dict[str, Any]:
    """The preview's answer (see the module docstring)."""
    scores: dict[str, dict[str, list[float]]] = {}
    rows = []
    for task, entry in zip(tasks, outcome.entries, strict=True):
        result = entry.get("result", []) if isinstance(entry, dict) else []
        for region in result:
            for label in region.get("value", {}).get(region.get("type"), []) or []:
                scores.setdefault(region["from_name"], {}).setdefault(label, []).append(float(region.get("score", 0)))
        score = entry.get("score") if isinstance(entry, dict) else None
        rows.append({"id": task.get("id"), "regions": len(result), "score": score, "result": result})
    failed = {str(task): [redact(reason) for reason in reasons] for task, reasons in outcome.failed.items()}
    failed.update({str(task): [outcome.stop_reason or "not reached"] for task in outcome.unreached})
    labels = {control: {label: _distribution(v) for label, v in found.items()} for control, found in scores.items()}
    return {"model_version": model_version, "tasks": rows, "labels": labels, "failed": failed}


def _distribution(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    p25, median, p75 = np.percentile(v, [25, 50, 75])
    histogram = np.histogram(np.clip(v, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]
    return {"count": len(v), "min": round(float(v.min()), 4), "p25": round(float(p25), 4),
            "median": round(float(median), 4), "p75": round(float(p75), 4), "max": round(float(v.max()), 4),
            "histogram": histogram.tolist()}  # fmt: skip
