"""Bulk jobs on disk: one SQLite file under ``MODEL_DIR``, so a job outlives the process that runs it.

A job's *cursor* is the highest task id it has finished (predicted and written, skipped, or failed): tasks come in
id order, so a job that stops for any reason (killed, server restarted, Label Studio down) starts again after its
cursor. A job is *claimed* by exactly one runner at a time (an atomic update holding a lease that the runner renews);
a runner that dies stops renewing, and another takes the job over once the lease runs out, or at once when the
holder was a process of this machine that no longer exists.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.jobs.pages import JobFilter
from backend.log_redaction import redact
from backend.sqlite_file import SQLiteFile

__all__ = ["Counts", "Job", "JobStore", "worker_name"]

FAILURES_SHOWN = 20  # first reasons in a job's answer; all are kept

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    filters TEXT NOT NULL,             -- JSON of JobFilter
    origin TEXT NOT NULL,              -- api, cli, retrieve
    state TEXT NOT NULL,               -- queued, running, done, failed, cancelled
    cancel INTEGER NOT NULL DEFAULT 0, -- asked to stop
    cursor INTEGER NOT NULL DEFAULT 0, -- every task with an id up to this one is finished
    total INTEGER,                     -- tasks the job covers (finished + left), known once it has read a page
    predicted INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    model_version TEXT,                -- the version of its latest predictions
    error TEXT,                        -- why the job failed
    created_at REAL NOT NULL,
    started_at REAL,                   -- first claimed
    run_seconds REAL NOT NULL DEFAULT 0,  -- time spent running, over every run
    finished_at REAL,
    claimed_by TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS job_failures (
    job_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (job_id, task_id)
);
"""
_COLUMNS = (
    "id, project_id, filters, origin, state, cancel, cursor, total, predicted, skipped, failed, model_version, error, "
    "created_at, started_at, run_seconds, finished_at, claimed_by"
)


@dataclass(frozen=True)
class Job:
    """A job as stored (see the schema for each field)."""

    id: int
    project_id: int
    filter: JobFilter
    origin: str
    state: str
    cancel: bool
    cursor: int
    total: int | None
    predicted: int
    skipped: int
    failed: int
    model_version: str | None
    error: str | None
    created_at: float
    started_at: float | None
    run_seconds: float
    finished_at: float | None
    claimed_by: str | None

    @property
    def finished_tasks(self) -> int:
        """Tasks the job is through with, whatever their outcome."""
        return self.predicted + self.skipped + self.failed


@dataclass
class Counts:
    """What one page added to a job."""

    predicted: int = 0
    skipped: int = 0
    failures: dict[int, str] = field(default_factory=dict)


def worker_name() -> str:
    """``host:pid``: who holds a job (a process of this host that is gone holds nothing)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_gone(holder: str | None) -> bool:
    """Whether a claim's holder was a process of this host that no longer runs."""
    if not holder:
        return True
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobStore:
    """SQLite-backed jobs (``jobs.sqlite3``), shared by every worker process and the ``prelabel bulk`` command."""

    def __init__(self, model_dir: Path) -> None:
        self._db = SQLiteFile(model_dir / "jobs.sqlite3", _SCHEMA, mode=0o600)

    def create(self, project_id: int, job_filter: JobFilter, origin: str) -> Job:
        """A new queued job."""
        row = (project_id, json.dumps(job_filter.to_json()), origin, "queued", time.time())

        def write(db: sqlite3.Connection) -> int:
            return db.execute(
                "INSERT INTO jobs (project_id, filters, origin, state, created_at) VALUES (?, ?, ?, ?, ?)", row
            ).lastrowid

        job = self.get(self._db.run(write))
        assert job is not None
        return job

    def get(self, job_id: int) -> Job | None:
        """The job, or ``None``."""
        if not 0 < job_id < 2**63:  # SQLite integers are 64-bit: no such job
            return None
        row = self._db.run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else _job(row)

    def active(self, project_id: int | None = None) -> list[Job]:
        """Queued and running jobs (of one project), oldest first."""
        where = "state IN ('queued', 'running')" + ("" if project_id is None else " AND project_id = ?")
        args = () if project_id is None else (project_id,)
        rows = self._db.run(
            lambda db: db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY id", args).fetchall()
        )
        return [_job(r) for r in rows]

    def recent(self, limit: int = 20) -> list[Job]:
        """The newest jobs first."""
        rows = self._db.run(
            lambda db: db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [_job(r) for r in rows]

    def matching(self, project_id: int, job_filter: JobFilter, origin: str) -> Job | None:
        """The unfinished job of this project, filter and origin, if one exists (starting it again resumes it)."""
        filters = json.dumps(job_filter.to_json())
        row = self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE project_id = ? AND filters = ? AND origin = ? AND state IN "
                "('queued', 'running') ORDER BY id LIMIT 1",
                (project_id, filters, origin),
            ).fetchone()
        )
        return None if row is None else _job(row)

    def claim(
        self, worker: str, lease: float, *, job_id: int | None = None, origins: tuple[str, ...] = ()
    ) -> Job | None:
        """Claim a job nobody holds (``job_id``, or the oldest of ``origins``) and mark it running; atomic."""
        now = time.time()

        def work(db: sqlite3.Connection) -> int | None:
            where = ["state IN ('queued', 'running')"]
            args: list[Any] = []
            if job_id is not None:
                where.append("id = ?")
                args.append(job_id)
            if origins:
                where.append(f"origin IN ({','.join('?' * len(origins))})")
                args.extend(origins)
            rows = db.execute(
                f"SELECT id, claimed_by, lease_until FROM jobs WHERE {' AND '.join(where)} ORDER BY id", args
            ).fetchall()
            for found, holder, until in rows:
                if holder is not None and until is not None and until >= now and not _holder_gone(holder):
                    continue
                claimed = db.execute(
                    "UPDATE jobs SET state = 'running', claimed_by = ?, lease_until = ?, "
                    "started_at = COALESCE(started_at, ?) WHERE id = ? AND claimed_by IS ? AND lease_until IS ?",
                    (worker, now + lease, now, found, holder, until),
                ).rowcount
                if claimed:
                    return found
            return None

        claimed = self._db.run(work)
        return None if claimed is None else self.get(claimed)

    def holder(self, job_id: int) -> tuple[str | None, float | None]:
        """Who holds a job and until when."""
        row = self._db.run(
            lambda db: db.execute("SELECT claimed_by, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return (row[0], row[1]) if row else (None, None)

    def renew(self, job_id: int, worker: str, lease: float) -> bool:
        """Extend a running job's lease; False when the job is no longer this worker's."""
        return bool(
            self._db.run(
                lambda db: (
                    db.execute(
                        "UPDATE jobs SET lease_until = ? WHERE id = ? AND claimed_by = ?",
                        (time.time() + lease, job_id, worker),
                    ).rowcount
                )
            )
        )

    def advance(
        self, job_id: int, worker: str, cursor: int, counts: Counts, *, model_version: str | None, seconds: float
    ) -> bool:
        """Record a finished page in one transaction; False (nothing recorded) when the job is not this worker's."""

        def work(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE jobs SET cursor = MAX(cursor, ?), predicted = predicted + ?, skipped = skipped + ?, "
                "failed = failed + ?, model_version = COALESCE(?, model_version), run_seconds = run_seconds + ? "
                "WHERE id = ? AND claimed_by = ?",
                (cursor, counts.predicted, counts.skipped, len(counts.failures), model_version, seconds, job_id,
                 worker),
            ).rowcount  # fmt: skip
            if changed:
                db.executemany(
                    "INSERT OR REPLACE INTO job_failures VALUES (?, ?, ?)",
                    [(job_id, task, redact(reason)) for task, reason in counts.failures.items()],
                )
            return bool(changed)

        return self._db.run(work)

    def set_total(self, job_id: int, total: int) -> None:
        """How many tasks the job covers (finished ones included)."""
        self._db.run(lambda db: db.execute("UPDATE jobs SET total = ? WHERE id = ?", (total, job_id)))

    def finish(self, job_id: int, worker: str | None, state: str, error: str | None = None) -> None:
        """End a job (``done``, ``failed``, ``cancelled``) and release it."""
        holder = "" if worker is None else " AND (claimed_by = ? OR claimed_by IS NULL)"
        error = None if error is None else redact(error)  # reasons quote URLs: no presigned signature is kept
        args: tuple[Any, ...] = (state, error, time.time(), job_id) + (() if worker is None else (worker,))
        self._db.run(
            lambda db: db.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ?, claimed_by = NULL, lease_until = NULL "
                f"WHERE id = ? AND state IN ('queued', 'running'){holder}",
                args,
            )
        )

    def release(self, job_id: int, worker: str) -> None:
        """Let go of a job without finishing it (it stays running; the next claim resumes it)."""
        self._db.run(
            lambda db: db.execute(
                "UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE id = ? AND claimed_by = ?",
                (job_id, worker),
            )
        )

    def request_cancel(self, job_id: int) -> Job | None:
        """Ask a job to stop: a queued or unheld one is cancelled at once, a running one after its current batch."""
        if not 0 < job_id < 2**63:
            return None

        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND state IN ('queued', 'running')", (job_id,))
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state IN ('queued', 'running') "
                "AND (claimed_by IS NULL OR lease_until < ?)",
                (time.time(), job_id, time.time()),
            )

        self._db.run(work)
        return self.get(job_id)

    def cancelled(self, job_id: int) -> bool:
        """Whether the job was asked to stop."""
        row = self._db.run(lambda db: db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return bool(row and row[0])

    def failures(self, job_id: int, limit: int = FAILURES_SHOWN) -> list[tuple[int, str]]:
        """The job's first failed tasks and why, by task id."""
        return self._db.run(
            lambda db: db.execute(
                "SELECT task_id, reason FROM job_failures WHERE job_id = ? ORDER BY task_id LIMIT ?", (job_id, limit)
            ).fetchall()
        )

    def pending_tasks(self, project_id: int) -> set[int]:
        """Task ids that active jobs of a project were handed by name and have not finished (see ``retrieve``)."""
        found: set[int] = set()
        for job in self.active(project_id):
            found.update(t for t in job.filter.task_ids or () if t > job.cursor)
        return found


def _job(row: Any) -> Job:
    return Job(row[0], row[1], JobFilter.from_json(json.loads(row[2])), row[3], row[4], bool(row[5]), *row[6:])
