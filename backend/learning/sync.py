"""Label Studio's API -> every annotation of a project, page by page ("Start training" carries none)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from backend.learning.events import Annotation, annotation_from
from backend.ls_client import LabelStudioClient

__all__ = ["PAGE_SIZE", "fetch_annotations"]

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
    page_size = page_size or PAGE_SIZE
    page, seen = 1, 0
    while True:
        params = {"project": project_id, "page": page, "page_size": page_size, "fields": "all", "query": _ANNOTATED}
        body = ls.get_json("/api/tasks", params)
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        for task in tasks:
            for annotation in task.get("annotations") or []:
                yield annotation_from(annotation, task)
        seen += len(tasks)
        total = body.get("total") if isinstance(body, dict) else None
        if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
            return
        page += 1
