"""Per-project state in SQLite under ``MODEL_DIR``.

With several gunicorn workers, ``/setup`` and ``/predict`` for one project can land in different processes,
and ``/predict`` does not carry ``extra_params``; so what ``/setup`` learns is written here, and every
process reads it back. One short-lived connection per call keeps it safe across threads and processes. A file
deleted or corrupted while the server runs is replaced by an empty one (see ``backend.sqlite_file``): Label
Studio calls ``/setup`` before every batch, so projects register again by themselves.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.log_redaction import redact
from backend.sqlite_file import SQLiteFile

__all__ = ["Event", "ProjectRecord", "ProjectStore", "project_id"]

EVENTS_KEPT = 500
REVIEWS_KEPT = 1000  # review summaries kept per project, the oldest dropped first

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project TEXT PRIMARY KEY,          -- Label Studio's "<id>.<created epoch>"
    project_id INTEGER,                -- the numeric id, for webhooks
    label_config TEXT NOT NULL,
    extra_params TEXT NOT NULL,        -- JSON object
    hostname TEXT,
    access_token TEXT,
    model_version TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (    -- what went wrong, for the status page (Label Studio hides backend errors)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    project TEXT,
    kind TEXT NOT NULL,                -- setup, task, auth, stopped, webhook
    message TEXT NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    project TEXT NOT NULL,
    model_version TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (project, model_version)
);
CREATE TABLE IF NOT EXISTS reviews (   -- each review report's summary (backend.review.history)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    at REAL NOT NULL,
    summary TEXT NOT NULL              -- JSON object
);
"""
_SELECT = "SELECT project, label_config, extra_params, hostname, access_token, model_version FROM projects"


def project_id(project: str | int | None) -> int | None:
    """The numeric id in Label Studio's ``"<id>.<epoch>"`` project key, or ``None``."""
    if project is None:
        return None
    head, _, tail = str(project).partition(".")
    ascii_digits = head.isascii() and head.isdigit() and (not tail or (tail.isascii() and tail.isdigit()))
    return int(head) if ascii_digits and len(head) <= 18 else None  # SQLite integers are 64-bit


@dataclass(frozen=True)
class ProjectRecord:
    """What ``/setup`` told us about a project."""

    project: str
    label_config: str
    extra_params: dict[str, Any]
    hostname: str | None
    access_token: str | None
    model_version: str


@dataclass(frozen=True)
class Event:
    """Something a user should see on the status page: a refused setup, tasks not predicted, refused credentials."""

    at: float
    project: str | None
    kind: str
    message: str
    count: int


class ProjectStore:
    """SQLite-backed project settings, shared by every worker process."""

    def __init__(self, model_dir: Path) -> None:
        self._db = SQLiteFile(model_dir / "prelabel.sqlite3", _SCHEMA, mode=0o600)  # it holds Label Studio tokens
        self.path = self._db.path

    def save(self, record: ProjectRecord) -> None:
        """Insert or replace a project, and remember its model version."""
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO projects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.project,
                    project_id(record.project),
                    record.label_config,
                    json.dumps(record.extra_params),
                    record.hostname,
                    record.access_token,
                    record.model_version,
                    now,
                ),
            )
            db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?)", (record.project, record.model_version, now))

        self._db.run(write)

    def get(self, project: str) -> ProjectRecord | None:
        """The project saved under Label Studio's key, or ``None``."""
        row = self._db.run(lambda db: db.execute(f"{_SELECT} WHERE project = ?", (project,)).fetchone())
        return None if row is None else _record(row)

    def find(self, project_id: int) -> ProjectRecord | None:
        """The most recently set-up project with this numeric id (webhooks name projects by id only)."""
        row = self._db.run(
            lambda db: db.execute(
                f"{_SELECT} WHERE project_id = ? ORDER BY updated_at DESC LIMIT 1", (project_id,)
            ).fetchone()
        )
        return None if row is None else _record(row)

    def add_version(self, project: str, model_version: str) -> None:
        """Remember a version produced for a project other than by ``/setup`` (a fit)."""
        self._db.run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO versions VALUES (?, ?, ?)", (project, model_version, time.time())
            )
        )

    def all(self) -> list[ProjectRecord]:
        """Every saved project, most recently set up first."""
        rows = self._db.run(lambda db: db.execute(f"{_SELECT} ORDER BY updated_at DESC").fetchall())
        return [_record(row) for row in rows]

    def versions(self, project: str | None = None) -> list[str]:
        """Model versions seen for a project (or for all), oldest first."""

        def read(db: sqlite3.Connection) -> list[Any]:
            if project is None:
                return db.execute("SELECT DISTINCT model_version FROM versions ORDER BY first_seen").fetchall()
            return db.execute(
                "SELECT model_version FROM versions WHERE project = ? OR project LIKE ? ORDER BY first_seen",
                (project, f"{project}.%"),
            ).fetchall()

        return list(dict.fromkeys(v for (v,) in self._db.run(read)))

    def add_review(self, project_id: int, model_version: str, summary: dict[str, Any]) -> None:
        """Keep a review report's summary numbers (only the project's newest ``REVIEWS_KEPT``)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO reviews (project_id, model_version, at, summary) VALUES (?, ?, ?, ?)",
                (project_id, model_version, time.time(), json.dumps(summary)),
            )
            db.execute(
                "DELETE FROM reviews WHERE project_id = ? AND id NOT IN "
                "(SELECT id FROM reviews WHERE project_id = ? ORDER BY id DESC LIMIT ?)",
                (project_id, project_id, REVIEWS_KEPT),
            )

        self._db.run(write)

    def reviews(self, project_id: int) -> list[tuple[float, str, dict[str, Any]]]:
        """The project's review summaries, oldest first: ``(time, model version, summary)``."""
        rows = self._db.run(
            lambda db: db.execute(
                "SELECT at, model_version, summary FROM reviews WHERE project_id = ? ORDER BY id", (project_id,)
            ).fetchall()
        )
        return [(at, version, json.loads(summary)) for at, version, summary in rows]

    def record_event(self, kind: str, message: str, *, project: str | None = None, count: int = 1) -> None:
        """Remember an event for the status page (secrets redacted); only the newest ``EVENTS_KEPT`` are kept."""
        message = redact(message)  # URLs in reasons may carry signatures and tokens; the page is no log

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO events (at, project, kind, message, count) VALUES (?, ?, ?, ?, ?)",
                (time.time(), project, kind, message, count),
            )
            db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_KEPT,))

        self._db.run(write)

    def events(self, limit: int = 100, kinds: tuple[str, ...] = ()) -> list[Event]:
        """The newest events first, optionally only of some kinds."""
        where = f"WHERE kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        query = f"SELECT at, project, kind, message, count FROM events {where} ORDER BY id DESC LIMIT ?"
        rows = self._db.run(lambda db: db.execute(query, (*kinds, limit)).fetchall())
        return [Event(*row) for row in rows]


def _record(row: Any) -> ProjectRecord:
    return ProjectRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])
