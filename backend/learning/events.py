"""Label Studio webhook payloads -> annotation changes: the only thing learning takes from a webhook.

``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` carry the annotation and its task, ``ANNOTATIONS_CREATED`` lists of
both, ``ANNOTATIONS_DELETED`` only ids, ``START_TRAINING`` nothing but the project (its annotations are fetched
through the API). Other actions do not concern learning.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.errors import BadRequest

__all__ = ["Annotation", "Change", "annotation_from", "parse_change"]

UPSERTS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"})


@dataclass(frozen=True)
class Annotation:
    """One annotation as learning needs it.

    Attributes:
        id: Label Studio's annotation id.
        task_id: Its task.
        task_data: The task's ``data`` (image references).
        result: The regions the annotator submitted.
        cancelled: Skipped (``was_cancelled``): says nothing about the labels, so it teaches nothing.
        ground_truth: Marked as ground truth: the task's reference answer when annotators disagree.
        completed_by: The annotator's user id.
        parent_prediction: Id of the prediction the annotator started from, if any.
        updated_at: Seconds since the epoch.
    """

    id: int
    task_id: int
    task_data: Mapping[str, Any]
    result: tuple[Mapping[str, Any], ...]
    cancelled: bool = False
    ground_truth: bool = False
    completed_by: int | None = None
    parent_prediction: int | None = None
    updated_at: float = 0.0


@dataclass(frozen=True)
class Change:
    """What a webhook changes: annotations to add or replace, ids to forget, or a full sync to run."""

    kind: Literal["upsert", "delete", "sync"]
    project_id: int
    annotations: tuple[Annotation, ...] = ()
    deleted: tuple[int, ...] = field(default=())


def parse_change(payload: Mapping[str, Any]) -> Change | None:
    """The change a webhook payload makes, or ``None`` for actions learning ignores.

    Raises:
        BadRequest: The payload is missing what its action must carry; the message names it.
    """
    action = payload.get("action")
    if action not in (*UPSERTS, "ANNOTATIONS_DELETED", "START_TRAINING"):
        return None
    project_id = _project_id(payload.get("project"))
    if action == "START_TRAINING":
        return Change("sync", project_id)
    if action == "ANNOTATIONS_DELETED":
        items = payload.get("annotations")
        if not isinstance(items, list) or not all(isinstance(a, dict) and _is_int(a.get("id")) for a in items):
            raise BadRequest("ANNOTATIONS_DELETED needs 'annotations': a list of {\"id\": ...}")
        return Change("delete", project_id, deleted=tuple(int(a["id"]) for a in items))
    annotations, tasks = payload.get("annotation"), payload.get("task")
    if isinstance(annotations, dict):
        annotations, tasks = [annotations], [tasks]
    if not isinstance(annotations, list) or not isinstance(tasks, list) or len(tasks) != len(annotations):
        raise BadRequest(f"{action} needs 'annotation' and its 'task'")
    by_id = {t["id"]: t for t in tasks if isinstance(t, dict) and _is_int(t.get("id"))}
    parsed = []
    for item in annotations:
        if not isinstance(item, dict):
            raise BadRequest(f"{action}: each annotation must be an object")
        task_id = item.get("task")
        task = by_id.get(task_id) if _is_int(task_id) else None
        if task is None and len(tasks) == 1:
            task = tasks[0]
        parsed.append(annotation_from(item, task))
    return Change("upsert", project_id, annotations=tuple(parsed))


def annotation_from(item: Mapping[str, Any], task: Any) -> Annotation:
    """An ``Annotation`` from Label Studio's annotation object and its task object.

    Raises:
        BadRequest: Ids, result or task data missing or of the wrong type.
    """
    if not _is_int(item.get("id")):
        raise BadRequest("annotation.id must be an integer")
    if not isinstance(task, dict) or not _is_int(task.get("id")) or not isinstance(task.get("data"), dict):
        raise BadRequest(f"annotation {item['id']}: its task (id and data) is missing")
    result = item.get("result") or []
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise BadRequest(f"annotation {item['id']}: result must be a list of regions")
    return Annotation(
        id=int(item["id"]),
        task_id=int(task["id"]),
        task_data=task["data"],
        result=tuple(result),
        cancelled=bool(item.get("was_cancelled")),
        ground_truth=bool(item.get("ground_truth")),
        completed_by=_user(item.get("completed_by")),
        parent_prediction=int(item["parent_prediction"]) if _is_int(item.get("parent_prediction")) else None,
        updated_at=_timestamp(item.get("updated_at")),
    )


def _project_id(project: Any) -> int:
    value = project.get("id") if isinstance(project, dict) else project
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and value.split(".", 1)[0].isdigit():
        return int(value.split(".", 1)[0])
    raise BadRequest("webhook needs 'project' (an object with an 'id')")


def _user(value: Any) -> int | None:
    value = value.get("id") if isinstance(value, dict) else value
    return int(value) if _is_int(value) else None


def _timestamp(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    if _is_int(value) or isinstance(value, float):
        return float(value) if math.isfinite(value) else 0.0
    return 0.0


def _is_int(value: Any) -> bool:
    """An id Label Studio could have sent: an integer SQLite can store (64-bit)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
