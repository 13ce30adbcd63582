"""Label Studio's API -> each annotation of a project next to the prediction it is judged against, page by page.

The prediction is the task's stored prediction of the version under review (the project's ML backend's current
version unless another is asked for); with no version known, the one the annotator started from
(``parent_prediction``), else the task's newest. Cancelled (skipped) annotations judge nothing and are counted apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.errors import BadRequest
from backend.learning.events import Annotation, annotation_from
from backend.learning.sync import annotated_tasks
from backend.ls_client import LabelStudioClient

__all__ = ["Pair", "Skipped", "backend_version", "pairs"]


@dataclass(frozen=True)
class Pair:
    """One annotation and the prediction it is compared with.

    Attributes:
        annotation: The annotation (its regions, annotator, task).
        annotator: How to call the annotator: Label Studio's user name when it sends one, else ``user <id>``.
        predicted: The prediction's regions.
        model_version: The prediction's model version.
    """

    annotation: Annotation
    annotator: str
    predicted: tuple[Mapping[str, Any], ...]
    model_version: str


@dataclass
class Skipped:
    """Annotations left out of the comparison, by reason."""

    cancelled: int = 0
    no_prediction: int = 0
    unreadable: int = 0


def backend_version(ls: LabelStudioClient, project_id: int, known: Sequence[str] = ()) -> str | None:
    """The current model version of the project's ML backend: the one this server made (``known``), else its only one.

    Raises:
        LabelStudioAPIError: Label Studio refused or could not be reached; the message names the call.
    """
    backends = [b for b in ls.get_json("/api/ml", {"project": project_id}) or [] if b.get("model_version")]
    ours = [b for b in backends if b["model_version"] in known] or (backends if len(backends) == 1 else [])
    return str(ours[0]["model_version"]) if ours else None


def pairs(
    ls: LabelStudioClient, project_id: int, version: str | None, skipped: Skipped, page_size: int | None = None
) -> Iterator[Pair]:
    """Every annotation of the project's annotated tasks with its prediction (``skipped`` counts the others).

    Raises:
        LabelStudioAPIError: A page could not be read.
    """
    for task in annotated_tasks(ls, project_id, page_size):
        predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
        for item in task.get("annotations") or []:
            try:
                annotation = annotation_from(item, task)
            except BadRequest:
                skipped.unreadable += 1
                continue
            if annotation.cancelled:
                skipped.cancelled += 1
                continue
            prediction = _prediction(predictions, version, annotation.parent_prediction)
            if prediction is None:
                skipped.no_prediction += 1
                continue
            result = prediction.get("result")
            yield Pair(
                annotation,
                _annotator(item, annotation.completed_by),
                tuple(r for r in result if isinstance(r, dict)) if isinstance(result, list) else (),
                str(prediction.get("model_version") or ""),
            )


def _prediction(predictions: list[dict[str, Any]], version: str | None, parent: int | None) -> dict[str, Any] | None:
    if version is not None:
        mine = [p for p in predictions if p.get("model_version") == version]
        return max(mine, key=_newest) if mine else None
    started_from = [p for p in predictions if p.get("id") == parent]
    if started_from:
        return started_from[0]
    return max(predictions, key=_newest) if predictions else None


def _newest(prediction: dict[str, Any]) -> tuple[str, int]:
    created, pid = prediction.get("created_at"), prediction.get("id")
    return (created if isinstance(created, str) else "", pid if isinstance(pid, int) else 0)


def _annotator(item: Mapping[str, Any], user: int | None) -> str:
    name = item.get("created_username")
    if isinstance(name, str) and name.strip():
        return name.strip()
    return f"user {user}" if user is not None else "unknown"
