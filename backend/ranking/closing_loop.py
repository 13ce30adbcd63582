"""A fit's new version -> the unlabelled tasks that matter most -> a bulk job re-predicting them -> the tab re-orders.

Opt-in per project (``active_learning.repredict: N``, 0 = off). After a fit makes a new version, the project's tasks
without annotations are read page by page (only the ``N`` lowest kept in memory) and ranked by their newest
prediction of this backend (its score, the project's strategy: low = label next; a task this backend never
predicted comes first). Those ``N`` are queued as a bulk job of origin ``active_learning``, which predicts them with
the new version and writes the predictions through Label Studio's API (``backend.jobs``: resumable, with progress at
``/jobs``). When that job is done, the project's "Label next" tab is made if missing and the project's prediction
scores are pointed at the new version, so the tab orders the re-predicted tasks by their fresh scores.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from typing import Any

from backend.jobs.pages import JobFilter, read_page, skip_reason
from backend.ls_client import LabelStudioClient
from backend.ranking.tabs import ensure_tab, label_next_tab

__all__ = ["ORIGIN", "most_uncertain", "show_version"]

ORIGIN = "active_learning"
NEVER_PREDICTED = -1.0  # ranks below every score: what this backend knows nothing about is labelled or predicted first
_PAGE = 100


def most_uncertain(ls: LabelStudioClient, project_id: int, count: int, ours: Collection[str]) -> list[int]:
    """The ``count`` unannotated tasks with the lowest score of this backend's newest prediction, lowest first.

    Args:
        ls: The project's Label Studio API.
        project_id: Label Studio's project id.
        count: How many tasks.
        ours: The model versions this backend made for the project (other predictions are not its ranking).

    Raises:
        LabelStudioAPIError: Label Studio could not be asked; the message names the call.
    """
    every = JobFilter()
    kept: list[tuple[float, int]] = []  # (-score, -id): the root is the highest-ranked task kept, the first to go
    after = 0
    while tasks := read_page(ls, project_id, every, after, _PAGE).tasks:
        for task in tasks:
            if skip_reason(task, "", every) == "annotated":
                continue
            item = (-_score(task, ours), -int(task["id"]))
            if len(kept) < count:
                heapq.heappush(kept, item)
            elif item > kept[0]:
                heapq.heapreplace(kept, item)
        after = int(tasks[-1]["id"])
    return [-task for _, task in sorted(kept, reverse=True)]


def show_version(ls: LabelStudioClient, project_id: int, version: str) -> None:
    """The "Label next" tab (made if missing) ordered by ``version``'s scores: the project's ``model_version``.

    Raises:
        LabelStudioAPIError: Label Studio refused or could not be reached; the message names the call.
    """
    ensure_tab(ls, project_id, label_next_tab())
    project = ls.get_json(f"/api/projects/{project_id}/")
    if project.get("model_version") != version:
        ls.request_json("PATCH", f"/api/projects/{project_id}/", body={"model_version": version})


def _score(task: dict[str, Any], ours: Collection[str]) -> float:
    mine = [p for p in task.get("predictions") or [] if isinstance(p, dict) and p.get("model_version") in ours]
    if not mine:
        return NEVER_PREDICTED
    score = max(mine, key=lambda p: p.get("id") or 0).get("score")
    return float(score) if isinstance(score, int | float) else NEVER_PREDICTED
