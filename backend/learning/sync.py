"""Label Studio's API -> every annotation of a project, page by page ("Start training" carries none)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from backend.learning.events import Annotation, annotation_from
from backend.ls_client import LabelStudioClient

__all__ = ["PAGE_SIZE", "annotated_tasks", "fetch_annotations"]

PAGE_SIZE = 100
# Only tasks with at least one annotation (Data Manager filter syntax).
_ANNOTATED = json.dumps(
    {
        "filters": {
            "conjunction": "and",
            "items": [
                {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}
            ],
        }
    }
)


def fetch_annotations(ls: LabelStudioClient, project_id: int, page_size: int | None = None) -> Iterator[Annotation]:
    """Every annotation of the project's annotated tasks, paged (memory holds one page at a time).

    Raises:
        LabelStudioAPIError: A page could not be read.
    """
    for task in annotated_tasks(ls, project_id, page_size):
        for annotation in task.get("annotations") or []:
            yield annotation_from(annotation, task)


def annotated_tasks(ls: LabelStudioClient, project_id: int, page_size: int | None = None) -> Iterator[dict[str, Any]]:
    """The project's tasks that have an annotation, whole (annotations and predictions included), paged.

    Raises:
        LabelStudioAPIError: A page could not be read.
    """
    page_size = page_size or PAGE_SIZE
    page, seen = 1, 0
    while True:
        params = {"project": project_id, "page": page, "page_size": page_size, "fields": "all", "query": _ANNOTATED}
        body = ls.get_json("/api/tasks", params)
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        yield from (task for task in tasks if isinstance(task, dict))
        seen += len(tasks)
        total = body.get("total") if isinstance(body, dict) else None
        if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
            return
        page += 1
