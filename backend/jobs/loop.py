"""Job requests in, jobs run in the background of a server worker: what ``POST/GET/DELETE /jobs`` and retrieves use.

Every worker process runs one loop that claims queued jobs (and running ones whose holder is gone) from the store
and runs them one at a time, so a job keeps going, or resumes after a restart, whichever worker took the request.
Jobs started by ``prelabel bulk`` are that command's own: the loop leaves them alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from backend.jobs.pages import JobFilter
from backend.jobs.runner import LEASE_S, JobRunner
from backend.jobs.store import Job, JobStore, worker_name

__all__ = ["JobLoop"]

log = logging.getLogger(__name__)
SERVER_ORIGINS = ("api", "retrieve", "active_learning")
_POLL_S = 2.0  # jobs asked for in another worker start within this (a local request wakes the loop at once)


class JobLoop:
    """One per server process.

    Args:
        runner: Runs a claimed job.
        finished: Told each job this loop ran, in its final state (what follows a job, e.g. a tab re-ordering).
    """

    def __init__(self, runner: JobRunner, finished: Callable[[Job], None] = lambda job: None) -> None:
        self.runner = runner
        self.finished = finished
        self.store: JobStore = runner.store
        self.worker = worker_name()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, project_id: int, job_filter: JobFilter, origin: str = "api") -> tuple[Job, bool]:
        """Queue a job, or answer the unfinished one of the same project and filter; the job and whether it is new."""
        existing = self.store.matching(project_id, job_filter, origin)
        if existing is not None:
            return existing, False
        job = self.store.create(project_id, job_filter, origin)
        self._wake.set()
        return job, True

    def start(self) -> None:
        """Start this process's loop (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)
            self._thread.start()

    def run_next(self) -> Job | None:
        """Claim and run one job, if any is waiting; its final state."""
        job = self.store.claim(self.worker, LEASE_S, origins=SERVER_ORIGINS)
        if job is None:
            return None
        log.info("job %s (project %s, %s) started by %s", job.id, job.project_id, job.origin, self.worker)
        ended = self.runner.run(job, self.worker)
        try:
            self.finished(ended)
        except Exception:  # what follows a job never undoes it
            log.exception("after job %s", job.id)
        return ended

    def _loop(self) -> None:
        while True:
            self._wake.wait(_POLL_S)
            self._wake.clear()
            try:
                while self.run_next() is not None:
                    pass
            except Exception:  # the loop must survive anything (the store heals itself; see sqlite_file)
                log.exception("job loop")
