"""A project's ranking -> Data Manager tabs (views) in Label Studio, through its API; idempotent.

A tab is found by its title among the project's views (``GET /api/dm/views?project=N``) and updated in place
(``PATCH /api/dm/views/<id>``), else created (``POST /api/dm/views``): running it again changes nothing, and a tab a
person renamed is left alone (a new one is made under the title). What a tab holds is Label Studio's view ``data``:
``title``, ``ordering`` (``tasks:<column>``, ``-`` for descending) and ``filters`` (the Data Manager's filter rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.ls_client import LabelStudioClient

__all__ = ["LABEL_NEXT", "MODEL_DISAGREES", "disagreement_tab", "ensure_tab", "label_next_tab"]

LABEL_NEXT = "Label next: most uncertain first"
MODEL_DISAGREES = "Model disagrees"


def label_next_tab() -> dict[str, Any]:
    """Tasks without an annotation, lowest prediction score first (the strategies' "label next" order)."""
    return {
        "title": LABEL_NEXT,
        "ordering": ["tasks:predictions_score"],
        "filters": {
            "conjunction": "and",
            "items": [{"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}],
        },
    }


def disagreement_tab(task_ids: Sequence[int]) -> dict[str, Any]:
    """The given tasks (where model and annotators disagree most); Label Studio lists them by id.

    Label Studio cannot sort by a measure it does not store, so the tab holds the tasks (one ``id`` filter row
    each, any of them); the report lists them in order of disagreement. No task: a filter no task passes.
    """
    rows = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(i)} for i in task_ids]
    if not rows:
        rows = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": 0}]
    return {"title": MODEL_DISAGREES, "ordering": ["tasks:id"], "filters": {"conjunction": "or", "items": rows}}


def ensure_tab(ls: LabelStudioClient, project_id: int, tab: dict[str, Any]) -> dict[str, Any]:
    """Create or update the project's tab titled ``tab["title"]``; ``{"id", "title", "action"}``.

    Raises:
        LabelStudioAPIError: Label Studio refused or could not be reached; the message names the call.
    """
    views = ls.get_json("/api/dm/views", {"project": project_id}) or []
    same = [v for v in views if isinstance(v, dict) and (v.get("data") or {}).get("title") == tab["title"]]
    body = {"project": project_id, "data": tab}
    if same:
        view = ls.request_json("PATCH", f"/api/dm/views/{same[0]['id']}/", body=body)
        action = "updated"
    else:
        view = ls.request_json("POST", "/api/dm/views/", body=body)
        action = "created"
    return {"id": view["id"], "title": tab["title"], "action": action}
