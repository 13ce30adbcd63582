"""Annotation events -> one debounced review per project, in the background -> review gauges and per-version history.

Every submitted, updated or deleted annotation changes how the model compares with people. Rather than wait for
someone to open ``/report``, a project whose annotations changed is reviewed again once its events pause for
``debounce`` seconds (the same quiet spell a fit waits for): one paged read of its annotated tasks per burst, not one
per annotation. The review itself is the service's (``/report``'s); a failure is reported and the next event retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ANNOTATION_ACTIONS", "ReviewRefresher"]

log = logging.getLogger(__name__)
ANNOTATION_ACTIONS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}
)


class ReviewRefresher:
    """One per process.

    Args:
        review: Reviews a project now (``PrelabelService.review``).
        failed: Told a project whose review failed, and why (the status page).
        debounce: Seconds without a new event before a project is reviewed.
    """

    def __init__(self, review: Callable[[int], Any], failed: Callable[[int, str], None], debounce: float = 3.0) -> None:
        self.review, self.failed, self.debounce = review, failed, debounce
        self._due: dict[int, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def touched(self, project_id: int) -> None:
        """A project's annotations changed: review it once they pause."""
        with self._lock:
            self._due[project_id] = time.monotonic() + self.debounce
        self._wake.set()

    def run_due(self) -> list[int]:
        """Review every project whose quiet spell is over; those projects."""
        now = time.monotonic()
        with self._lock:
            due = sorted(p for p, at in self._due.items() if at <= now)
            for project_id in due:
                del self._due[project_id]
        for project_id in due:
            try:
                self.review(project_id)
            except Exception as exc:  # the thread must survive; the user sees why on the status page
                log.warning("project %s: review after new annotations failed: %s", project_id, exc)
                self.failed(project_id, f"review after new annotations failed: {exc}")
        return due

    def start(self) -> None:
        """Start this process's thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="reviews", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                waits = [at - time.monotonic() for at in self._due.values()]
            self._wake.wait(max(min(waits), 0.05) if waits else None)
            self._wake.clear()
            self.run_due()
