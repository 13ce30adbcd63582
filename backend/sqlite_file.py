"""An SQLite file shared by processes that heals instead of failing every call until a restart.

A file deleted while the server runs is created again, schema included; a corrupt one is moved aside to
``<name>.corrupt-<timestamp>`` (with its ``-wal`` and ``-shm``), logged once, and replaced by an empty one.
Processes coordinate through an ``flock`` on ``<name>.lock``: one of them recovers, the others find the fresh
file and use it, so none moves aside a store another one has just created (or written to).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

__all__ = ["SQLiteFile"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CORRUPTION = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_COMPANIONS = ("-wal", "-shm")


class SQLiteFile:
    """One SQLite database file in WAL mode, created and repaired under an inter-process lock.

    Args:
        path: The database file; its directory holds the lock file and any files moved aside.
        schema: ``CREATE ... IF NOT EXISTS`` statements, run whenever the file is (re)created.
        mode: File mode of a created database (SQLite gives its -wal and -shm files the same).
    """

    def __init__(self, path: Path, schema: str, mode: int = 0o600) -> None:
        self.path = path
        self._schema = schema
        self._mode = mode
        self._lock_path = path.with_name(path.name + ".lock")
        # mode=rw: SQLite must never create the file itself (with the umask's mode and without the schema)
        self._uri = f"file:{quote(str(path))}?mode=rw"
        with self._locked():
            self._prepare(check=True, announce_missing=False)  # a first start creates it
            os.chmod(path, mode)  # also for a file an older version created

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in one transaction; a missing or corrupt file is repaired once, then retried."""
        seen = _identity(self.path)
        try:
            return self._run_once(work)
        except sqlite3.DatabaseError as exc:
            if not self._heal(exc, seen):
                raise
        return self._run_once(work)

    def _run_once(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._connection() as db, db:
            return work(db)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._uri, uri=True, timeout=30)) as db:
            yield db

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _heal(self, exc: sqlite3.DatabaseError, seen: tuple[int, int] | None) -> bool:
        """Repair what ``exc`` says is wrong with the file; False when it is not the file's fault."""
        code = _code(exc)
        corrupt = code in _CORRUPTION
        missing = code == sqlite3.SQLITE_CANTOPEN
        no_schema = code == sqlite3.SQLITE_ERROR and "no such table" in str(exc)
        if not (corrupt or missing or no_schema):
            return False
        with self._locked():
            # Only the file that failed is moved: another process may already have replaced it by a fresh one.
            moved = corrupt and seen is not None and _identity(self.path) == seen
            if moved:
                self._move_aside(str(exc))
            self._prepare(check=False, announce_missing=not moved)
        return True

    def _prepare(self, *, check: bool, announce_missing: bool) -> None:
        """Under the lock: create a missing file, move a corrupt one aside, put the schema in place."""
        self._create_if_missing(announce=announce_missing)
        problem = self._initialise(check=check)
        if problem is not None:
            self._move_aside(problem)
            self._create_if_missing(announce=False)
            self._initialise(check=False)

    def _create_if_missing(self, *, announce: bool) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._mode)
        except FileExistsError:
            return
        os.close(fd)
        for suffix in _COMPANIONS:  # journal files of a deleted database must not be replayed into the new one
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if announce:
            log.warning("%s was missing: created an empty one", self.path)

    def _initialise(self, *, check: bool) -> str | None:
        """WAL mode and the schema; returns why the file is corrupt instead, or None."""
        try:
            with self._connection() as db:
                if check:
                    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
                    if problems != ["ok"]:
                        return " ".join(" ".join(problems).split())  # one log line
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(self._schema)
        except sqlite3.DatabaseError as exc:
            if _code(exc) not in _CORRUPTION:
                raise
            return str(exc)
        return None

    def _move_aside(self, problem: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", *_COMPANIONS):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{target}{suffix}")
        log.error("%s is corrupt (%s): moved it to %s and started an empty one", self.path, problem, target)


def _code(exc: sqlite3.DatabaseError) -> int:
    """SQLite's primary result code (errors raised by Python's sqlite3 module itself have none: 0)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device and inode), or None."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
