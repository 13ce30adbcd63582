"""The annotations learning sees, the fits asked for, and the fits made: one SQLite file under ``MODEL_DIR``.

Shared by gunicorn workers: any worker records a webhook's change; a fit is *asked for* (``request_fit``) and then
*claimed* by exactly one worker (``claim_fit``, an atomic update holding a lease), so bursts of events become one
fit and a worker killed mid-fit only delays it until its lease runs out.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.learning.events import Annotation
from backend.sqlite_file import SQLiteFile

__all__ = ["FitRecord", "FitRequest", "LearningStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    project_id INTEGER NOT NULL,
    annotation_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    task_data TEXT NOT NULL,
    result TEXT NOT NULL,
    cancelled INTEGER NOT NULL,
    ground_truth INTEGER NOT NULL,
    completed_by INTEGER,
    parent_prediction INTEGER,
    updated_at REAL NOT NULL,
    verified INTEGER NOT NULL,       -- read back from Label Studio's API (a webhook's payload is only a claim)
    PRIMARY KEY (project_id, annotation_id)
);
CREATE TABLE IF NOT EXISTS fit_requests (
    project_id INTEGER PRIMARY KEY,
    requested_at REAL NOT NULL,      -- the newest event: a fit starts once this is a debounce old
    sync INTEGER NOT NULL,           -- fetch every annotation through Label Studio's API first
    claimed_by TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS fit_outcomes (    -- the last fit of each project, for webhook answers and the status page
    project_id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,           -- fitted, nothing_to_learn, failed
    detail TEXT NOT NULL,
    base_version TEXT NOT NULL       -- the settings it was for
);
CREATE TABLE IF NOT EXISTS fits (
    project_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    project TEXT NOT NULL,           -- Label Studio's "<id>.<epoch>" key
    base_version TEXT NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    summary TEXT NOT NULL,           -- JSON: examples per control and label
    PRIMARY KEY (project_id, n)
);
"""


@dataclass(frozen=True)
class FitRequest:
    """A claimed fit: which project, whether to sync first, and the request time it answers."""

    project_id: int
    sync: bool
    requested_at: float


@dataclass(frozen=True)
class FitRecord:
    """A fit that was made: its number, the base version it refines, where its artifact is."""

    project_id: int
    n: int
    project: str
    base_version: str
    path: Path
    created: float
    summary: dict[str, Any]

    @property
    def version(self) -> str:
        """The model version it is served under."""
        return f"{self.base_version}-fit{self.n}"


class LearningStore:
    """SQLite-backed annotations, fit requests and fits (``learning.sqlite3``)."""

    def __init__(self, model_dir: Path) -> None:
        self._db = SQLiteFile(model_dir / "learning.sqlite3", _SCHEMA, mode=0o600)

    def upsert(self, project_id: int, annotations: Iterable[Annotation], *, verified: bool = False) -> int:
        """Add or replace annotations; ``verified`` when they come from Label Studio's API. Returns how many."""
        rows = [
            (project_id, a.id, a.task_id, json.dumps(a.task_data), json.dumps(list(a.result)), int(a.cancelled),
             int(a.ground_truth), a.completed_by, a.parent_prediction, a.updated_at, int(verified))
            for a in annotations
        ]  # fmt: skip
        self._db.run(
            lambda db: db.executemany("INSERT OR REPLACE INTO annotations VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        )
        return len(rows)

    def delete(self, project_id: int, annotation_ids: Iterable[int]) -> int:
        """Forget annotations; returns how many were known."""
        ids = [(project_id, i) for i in annotation_ids]

        def work(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany("DELETE FROM annotations WHERE project_id = ? AND annotation_id = ?", ids)
            return db.total_changes - before

        return self._db.run(work)

    def replace_all(self, project_id: int, annotations: Iterable[Annotation]) -> int:
        """The project's annotations become exactly these (after a full sync)."""
        items = list(annotations)
        self._db.run(lambda db: db.execute("DELETE FROM annotations WHERE project_id = ?", (project_id,)))
        return self.upsert(project_id, items, verified=True)

    def annotations(self, project_id: int, *, unverified: bool = False) -> list[Annotation]:
        """Every known annotation of a project (or only those not yet read back from Label Studio), oldest first."""
        only = " AND verified = 0" if unverified else ""
        rows = self._db.run(
            lambda db: db.execute(
                "SELECT annotation_id, task_id, task_data, result, cancelled, ground_truth, completed_by, "
                f"parent_prediction, updated_at FROM annotations WHERE project_id = ?{only} "
                "ORDER BY updated_at, annotation_id",
                (project_id,),
            ).fetchall()
        )
        return [
            Annotation(r[0], r[1], json.loads(r[2]), tuple(json.loads(r[3])), bool(r[4]), bool(r[5]), r[6], r[7], r[8])
            for r in rows
        ]

    def request_fit(self, project_id: int, *, sync: bool = False) -> None:
        """Ask for a fit (a running one is not interrupted: it is followed by another)."""
        self._db.run(
            lambda db: db.execute(
                "INSERT INTO fit_requests VALUES (?, ?, ?, NULL, NULL) ON CONFLICT(project_id) DO UPDATE SET "
                "requested_at = excluded.requested_at, sync = MAX(sync, excluded.sync)",
                (project_id, time.time(), int(sync)),
            )
        )

    def claim_fit(self, worker: str, *, debounce: float, lease: float) -> FitRequest | None:
        """Claim the oldest fit whose last event is ``debounce`` seconds old and that nobody holds; atomic."""
        now = time.time()

        def work(db: sqlite3.Connection) -> FitRequest | None:
            row = db.execute(
                "SELECT project_id, sync, requested_at FROM fit_requests WHERE requested_at <= ? AND "
                "(claimed_by IS NULL OR lease_until < ?) ORDER BY requested_at LIMIT 1",
                (now - debounce, now),
            ).fetchone()
            if row is None:
                return None
            claimed = db.execute(
                "UPDATE fit_requests SET claimed_by = ?, lease_until = ? WHERE project_id = ? AND requested_at = ? "
                "AND (claimed_by IS NULL OR lease_until < ?)",
                (worker, now + lease, row[0], row[2], now),
            ).rowcount
            return FitRequest(row[0], bool(row[1]), row[2]) if claimed else None

        return self._db.run(work)

    def renew_claim(self, request: FitRequest, worker: str, lease: float) -> None:
        """Extend a running fit's lease, so a long fit is not taken over while it runs."""
        self._db.run(
            lambda db: db.execute(
                "UPDATE fit_requests SET lease_until = ? WHERE project_id = ? AND claimed_by = ?",
                (time.time() + lease, request.project_id, worker),
            )
        )

    def next_request_at(self) -> float | None:
        """When the oldest unclaimed fit request came (its fit is due a debounce later), or ``None``."""
        now = time.time()
        row = self._db.run(
            lambda db: db.execute(
                "SELECT MIN(requested_at) FROM fit_requests WHERE claimed_by IS NULL OR lease_until < ?", (now,)
            ).fetchone()
        )
        return row[0] if row and row[0] is not None else None

    def finish_fit(self, request: FitRequest, worker: str) -> None:
        """Release a claim: the request is done unless an event arrived meanwhile (then it waits for a new fit)."""
        self._db.run(
            lambda db: (
                db.execute(
                    "DELETE FROM fit_requests WHERE project_id = ? AND claimed_by = ? AND requested_at = ?",
                    (request.project_id, worker, request.requested_at),
                ),
                db.execute(
                    "UPDATE fit_requests SET claimed_by = NULL, lease_until = NULL, sync = 0 "
                    "WHERE project_id = ? AND claimed_by = ?",
                    (request.project_id, worker),
                ),
            )
        )

    def pending(self, project_id: int) -> bool:
        """Whether a fit is asked for or running."""
        return (
            self._db.run(
                lambda db: db.execute("SELECT 1 FROM fit_requests WHERE project_id = ?", (project_id,)).fetchone()
            )
            is not None
        )

    def add_fit(self, record: FitRecord) -> None:
        """Record a fit whose artifact is already on disk."""
        row = (
            record.project_id,
            record.n,
            record.project,
            record.base_version,
            str(record.path),
            record.created,
            json.dumps(record.summary),
        )
        self._db.run(lambda db: db.execute("INSERT INTO fits VALUES (?, ?, ?, ?, ?, ?, ?)", row))

    def fits(self, project_id: int) -> list[FitRecord]:
        """Every fit of a project, oldest first."""
        rows = self._db.run(
            lambda db: db.execute(
                "SELECT project_id, n, project, base_version, path, created, summary FROM fits WHERE project_id = ? "
                "ORDER BY n",
                (project_id,),
            ).fetchall()
        )
        return [FitRecord(r[0], r[1], r[2], r[3], Path(r[4]), r[5], json.loads(r[6])) for r in rows]

    def forget_fits(self, project_id: int, numbers: Iterable[int]) -> None:
        """Drop fits (their files are removed by the caller)."""
        rows = [(project_id, n) for n in numbers]
        self._db.run(lambda db: db.executemany("DELETE FROM fits WHERE project_id = ? AND n = ?", rows))

    def set_outcome(self, project_id: int, outcome: str, detail: str, base_version: str) -> None:
        """Remember how the project's last fit (for the settings of ``base_version``) ended."""
        row = (project_id, time.time(), outcome, detail, base_version)
        self._db.run(lambda db: db.execute("INSERT OR REPLACE INTO fit_outcomes VALUES (?, ?, ?, ?, ?)", row))

    def outcome(self, project_id: int) -> dict[str, Any] | None:
        """How the project's last fit ended: ``{"at", "outcome", "detail", "base_version"}``, or ``None``."""
        row = self._db.run(
            lambda db: db.execute(
                "SELECT at, outcome, detail, base_version FROM fit_outcomes WHERE project_id = ?", (project_id,)
            ).fetchone()
        )
        return None if row is None else {"at": row[0], "outcome": row[1], "detail": row[2], "base_version": row[3]}

    def has_annotations(self, project_id: int) -> bool:
        """Whether any annotation of the project is known."""
        return (
            self._db.run(
                lambda db: db.execute(
                    "SELECT 1 FROM annotations WHERE project_id = ? LIMIT 1", (project_id,)
                ).fetchone()
            )
            is not None
        )
