"""Predicted tasks -> their predictions in Label Studio, one API call per page.

What enters: ``(task id, entry)`` pairs, each entry as ``Runner.predict`` answers a task (``{"result", "score",
"model_version"}``). What leaves: one ``POST /api/projects/<id>/import/predictions`` with all of them, which Label
Studio stores in one transaction (all or none). A call that fails may still have been stored (an answer lost on the
way back): the job never posts a page twice, it reads the page again, and tasks that now hold a prediction of the
version are skipped (``pages.skip_reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.ls_client import LabelStudioClient

__all__ = ["write_predictions"]


def write_predictions(ls: LabelStudioClient, project_id: int, predicted: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Store one prediction per task.

    Raises:
        LabelStudioAPIError: Label Studio did not confirm; the message names the call and its answer.
    """
    if not predicted:
        return
    body = [
        {"task": task_id, "result": entry["result"], "score": entry["score"], "model_version": entry["model_version"]}
        for task_id, entry in predicted
    ]
    ls.request_json("POST", f"/api/projects/{project_id}/import/predictions", body=body)
