"""A project's ranking (or review) -> the "Label next" (or "Model disagrees") Data Manager tab in Label Studio; idempotent.

A tab is found by its title among the project's views (``GET /api/dm/views?project=N``) and updated in place
(``PATCH /api/dm/views/<id>``), else created (``POST /api/dm/views``): running it again changes nothing, and a tab a
person renamed is left alone (a new one is made under the title). What a tab holds is Label Studio's view ``data``:
``title``, ``ordering`` (``tasks:<column>``, ``-`` for descending) and ``filters`` (the Data Manager's filter rows).

Label Studio 1.23's Data Manager computes a task's prediction score over the predictions of the project's
``model_version`` only; connecting a backend sets that to the backend's *title* (meaning "ask the backend live"),
which no prediction carries, so every score reads empty and the ordering does nothing. ``score_source`` points it at
the backend's current model version instead (what Settings > Annotation > "Use predictions to prelabel tasks" does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.ls_client import LabelStudioClient
from backend.review.fetch import backend_version

__all__ = ["LABEL_NEXT", "MODEL_DISAGREES", "disagreements_tab", "ensure_tab", "label_next_tab", "score_source"]

LABEL_NEXT = "Label next: most uncertain first"
MODEL_DISAGREES = "Model disagrees: review these"


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


def disagreements_tab(task_ids: Sequence[int]) -> dict[str, Any]:
    """The tasks the review report found the model disagreeing with most, the model's most confident first.

    Label Studio's filters cannot hold a list of ids, so each task is one ``filter:tasks:id`` row, joined by "or";
    with no task to show, the one row ``id = 0`` matches nothing (no rows would show every task).
    """
    ids = list(task_ids) or [0]
    return {
        "title": MODEL_DISAGREES,
        "ordering": ["-tasks:predictions_score"],
        "filters": {
            "conjunction": "or",
            "items": [
                {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": task} for task in ids
            ],
        },
    }


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


def score_source(ls: LabelStudioClient, project_id: int, known: Sequence[str] = ()) -> str | None:
    """Make the project's prediction scores those of its backend's current version; that version (``None``: none).

    The backend is the project's ML backend whose version this server made (``known``); a project whose backend
    serves no version of this server's is left as it is.

    Raises:
        LabelStudioAPIError: Label Studio refused or could not be reached; the message names the call.
    """
    version = backend_version(ls, project_id, known)
    if version is None or version not in known:  # only versions this server made: never another backend's project
        return None
    project = ls.get_json(f"/api/projects/{project_id}/")
    if project.get("model_version") != version:
        ls.request_json("PATCH", f"/api/projects/{project_id}/", body={"model_version": version})
    return version
