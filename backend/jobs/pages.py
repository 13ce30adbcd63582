"""A job's filter + its cursor -> the next page of the project's tasks, read through Label Studio's API.

What enters: a ``JobFilter`` (a Data Manager view, task ids, whether annotated or predicted tasks are left alone) and
the highest task id the job has finished. What leaves: the next tasks after it, in id order, as
``GET /api/tasks?fields=all`` returns them (data, annotations, predictions), with how many are left. Reading in id
order after a cursor, rather than by page number, keeps pages stable while the job adds predictions (a filter on
predictions would otherwise shift later tasks onto pages already read) and makes a restart continue exactly where
the job stopped. ``skip_reason`` says which tasks a job must not predict: people's work, and tasks that already hold
a prediction of the version it would write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backend.errors import BadRequest
from backend.ls_client import LabelStudioClient

__all__ = ["MAX_TASK_IDS", "JobFilter", "Page", "read_page", "skip_reason"]

_ID_AFTER = "filter:tasks:id"


MAX_TASK_IDS = 100_000  # a job's named tasks are stored and checked on every retrieve: a tab selects more


@dataclass(frozen=True)
class JobFilter:
    """Which tasks of a project a job covers.

    Attributes:
        view: A Data Manager view (tab) id: only the tasks its filters select.
        task_ids: Only these tasks (sorted, distinct).
        without_annotations: Leave tasks that hold any annotation (cancelled ones too) alone; on by default.
        without_predictions: Only tasks holding no prediction at all, of any version.
    """

    view: int | None = None
    task_ids: tuple[int, ...] | None = None
    without_annotations: bool = True
    without_predictions: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobFilter:
        """The filter from a request body (``POST /jobs``) or the store; unknown keys are refused elsewhere.

        Raises:
            BadRequest: A value of the wrong kind; the message names the key.
        """
        view = body.get("view")
        if view is not None and (isinstance(view, bool) or not isinstance(view, int) or view < 1):
            raise BadRequest(f"'view' must be a Data Manager tab id like 4, got {view!r}")
        ids = body.get("task_ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise BadRequest("'task_ids' must be a list of task ids like [12, 13]")
            if not ids:
                raise BadRequest("'task_ids' is empty: leave it out to cover the whole project")
            ids = tuple(sorted(set(ids)))
            if len(ids) > MAX_TASK_IDS:
                raise BadRequest(
                    f"'task_ids' names {len(ids)} tasks, over {MAX_TASK_IDS}: for more, select them with a Data "
                    "Manager tab ('view') or cover the whole project"
                )
        flags = {}
        for key, default in (("without_annotations", True), ("without_predictions", False)):
            value = body.get(key, default)
            if not isinstance(value, bool):
                raise BadRequest(f"'{key}' must be true or false, got {value!r}")
            flags[key] = value
        return cls(view=view, task_ids=ids, **flags)

    def to_json(self) -> dict[str, Any]:
        """The filter as stored and shown (``GET /jobs/<id>``)."""
        return {
            "view": self.view,
            "task_ids": list(self.task_ids) if self.task_ids is not None else None,
            "without_annotations": self.without_annotations,
            "without_predictions": self.without_predictions,
        }


@dataclass(frozen=True)
class Page:
    """The next tasks of a job.

    Attributes:
        tasks: Tasks after the cursor, by id.
        missing: Ids the filter named that Label Studio did not answer (not in the project, or deleted).
        left: Tasks the filter covers after the cursor, this page included (``None`` when Label Studio did not say).
    """

    tasks: list[dict[str, Any]]
    missing: tuple[int, ...] = ()
    left: int | None = None

    @property
    def ids(self) -> list[int]:
        """Every id this page settles, in order: its tasks' and the missing ones."""
        return sorted({int(t["id"]) for t in self.tasks} | set(self.missing))


def read_page(ls: LabelStudioClient, project_id: int, job_filter: JobFilter, after: int, size: int) -> Page:
    """The next ``size`` tasks after task id ``after`` that the filter covers.

    Raises:
        LabelStudioAPIError: Label Studio could not be asked; the message names the call.
        BadRequest: The view is not one of the project's, or combines its filters in a way a job cannot resume.
    """
    items: list[dict[str, Any]] = [{"filter": _ID_AFTER, "operator": "greater", "type": "Number", "value": after}]
    conjunction = "and"
    if job_filter.view is not None:
        view_items, conjunction = _view_filters(ls, project_id, job_filter.view)
        items = [*view_items, *items]
    query: dict[str, Any] = {
        "filters": {"conjunction": conjunction, "items": items},
        "ordering": ["tasks:id"],
        "selectedItems": {"all": True, "excluded": []},
    }
    wanted: list[int] = []
    if job_filter.task_ids is not None:
        later = [t for t in job_filter.task_ids if t > after]
        wanted = later[:size]
        if not wanted:
            return Page([], (), 0)
        query["selectedItems"] = {"all": False, "included": wanted}
    params = {"project": project_id, "page": 1, "page_size": size, "fields": "all", "query": json.dumps(query)}
    body = ls.get_json("/api/tasks", params)
    tasks = body.get("tasks", []) if isinstance(body, dict) else body
    tasks = sorted((t for t in tasks or [] if isinstance(t, dict) and isinstance(t.get("id"), int)), key=_id)
    total = body.get("total") if isinstance(body, dict) else None
    if job_filter.task_ids is not None:
        found = {t["id"] for t in tasks}
        missing = tuple(t for t in wanted if t not in found)
        return Page(tasks, missing, len(later))
    return Page(tasks, (), total if isinstance(total, int) else None)


def skip_reason(task: dict[str, Any], model_version: str, job_filter: JobFilter) -> str | None:
    """Why a job leaves this task alone, or ``None`` to predict it."""
    if job_filter.without_annotations and (
        task.get("annotations") or task.get("total_annotations") or task.get("cancelled_annotations")
    ):
        return "annotated"
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if job_filter.without_predictions and (predictions or task.get("total_predictions")):
        return "has predictions"
    if any(p.get("model_version") == model_version for p in predictions):
        return "already predicted"
    return None


def _view_filters(ls: LabelStudioClient, project_id: int, view: int) -> tuple[list[dict[str, Any]], str]:
    """A Data Manager tab's filter items and their conjunction."""
    found = ls.get_json(f"/api/dm/views/{view}/")
    if not isinstance(found, dict) or found.get("project") != project_id:
        raise BadRequest(f"view {view} is not a tab of project {project_id}")
    filters = (found.get("data") or {}).get("filters") or {}
    items = [i for i in filters.get("items") or [] if isinstance(i, dict)]
    conjunction = filters.get("conjunction") or "and"
    if conjunction != "and" and len(items) > 1:
        raise BadRequest(
            f"view {view} joins its filters with OR: a job reads tasks in id order after the last one it finished, "
            "which only combines with AND filters; use an AND view or name the tasks (task_ids)"
        )
    return items, "and"


def _id(task: dict[str, Any]) -> int:
    return int(task["id"])
