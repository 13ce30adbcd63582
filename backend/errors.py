"""Errors the server turns into answers: a 4xx for a bad request, an empty result for a failed task."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BadRequest",
    "CredentialsRefused",
    "LabelConfigError",
    "MediaError",
    "PrelabelError",
    "ProjectSettingsError",
]


class PrelabelError(Exception):
    """Base error; carries the ids of the tasks it concerns, for the log line."""

    def __init__(self, reason: str, *, task_ids: Sequence[int | None] = ()) -> None:
        super().__init__(reason)
        self.task_ids = tuple(task_ids)


class BadRequest(PrelabelError):
    """The request body does not follow Label Studio's protocol (answered with 400)."""


class LabelConfigError(BadRequest):
    """The label config cannot be parsed or uses a control in a way prelabel cannot serve."""


class ProjectSettingsError(BadRequest):
    """``extra_params`` (or ``PRELABEL_DEFAULTS``) holds an unknown key or a wrong value."""


class MediaError(PrelabelError):
    """A task's image could not be fetched or decoded; that task gets an empty result."""


class CredentialsRefused(MediaError):
    """Label Studio answered 401/403 to prelabel's credentials: every upload fetch will fail until they are fixed."""
