from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from backend.store import ProjectRecord, ProjectStore


def record(project: str = "3.1700000000", version: str = "v1") -> ProjectRecord:
    return ProjectRecord(project, "<View/>", {"detection": {"model": "owlv2"}}, "http://ls", "t" * 40, version)


def filled_store_bytes(tmp_path: Path) -> bytes:
    """A real store with enough projects to span many pages, as bytes."""
    store = ProjectStore(tmp_path / "source")
    for i in range(200):
        store.save(record(f"{i}.1700000000"))
    return store.path.read_bytes()


def garbage(tmp_path: Path) -> bytes:
    return os.urandom(64 * 1024)


def truncated(tmp_path: Path) -> bytes:
    return filled_store_bytes(tmp_path)[: 3 * 4096 + 100]


def corrupt_pages(tmp_path: Path) -> bytes:
    """A valid header and schema page, garbage in the middle: only an integrity check notices."""
    data = bytearray(filled_store_bytes(tmp_path))
    data[8192:10192] = os.urandom(2000)
    return bytes(data)


def moved_aside(model_dir: Path) -> list[Path]:
    """Database files moved aside (their -wal and -shm go along, under the same name)."""
    return sorted(p for p in model_dir.glob("prelabel.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("content", [garbage, truncated, corrupt_pages, lambda _: b"not a database\n" * 100])
def test_a_corrupt_file_at_start_is_moved_aside_once_and_the_store_starts_clean(
    tmp_path: Path, content: Callable[[Path], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    bad = content(tmp_path)
    (model_dir / "prelabel.sqlite3").write_bytes(bad)

    store = ProjectStore(model_dir)

    (aside,) = moved_aside(model_dir)
    assert aside.read_bytes() == bad
    (logged,) = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
    assert str(aside) in logged and "\n" not in logged
    assert store.all() == []
    store.save(record())
    assert store.get("3.1700000000") == record() and mode(store.path) == 0o600


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "zero-length"])
def test_a_missing_or_empty_file_at_start_gets_the_schema_and_nothing_is_moved(
    tmp_path: Path, content: bytes | None
) -> None:
    if content is not None:
        (tmp_path / "prelabel.sqlite3").write_bytes(content)
    store = ProjectStore(tmp_path)
    store.save(record())
    assert store.versions("3") == ["v1"] and moved_aside(tmp_path) == []
    assert mode(store.path) == 0o600


def test_a_file_deleted_while_running_is_recreated_with_its_schema_and_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ProjectStore(tmp_path)
    store.save(record())
    store.path.unlink()

    assert store.get("3.1700000000") is None  # gone with the file, but no error
    store.save(record(version="v2"))
    assert store.get("3.1700000000") == record(version="v2") and store.versions() == ["v2"]
    assert sum("was missing" in r.getMessage() for r in caplog.records) == 1
    with closing(sqlite3.connect(store.path)) as db:
        db.execute("SELECT count(*) FROM projects").fetchone()  # a read opens the -wal and -shm files
        assert {mode(p) for p in tmp_path.glob("prelabel.sqlite3*") if not p.name.endswith(".lock")} == {0o600}


def test_the_whole_model_dir_deleted_while_running_is_recreated(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "model_dir")
    for path in (tmp_path / "model_dir").iterdir():
        path.unlink()
    (tmp_path / "model_dir").rmdir()
    store.save(record())
    assert store.all() == [record()]


@pytest.mark.parametrize("content", [garbage, truncated])
def test_a_file_corrupted_while_running_is_moved_aside_and_later_writes_are_kept(
    tmp_path: Path, content: Callable[[Path], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model_dir"
    store = ProjectStore(model_dir)
    store.save(record())
    bad = content(tmp_path)
    store.path.write_bytes(bad)

    assert store.get("3.1700000000") is None
    store.save(record(version="v2"))
    assert ProjectStore(model_dir).all() == [record(version="v2")]  # a new process sees it, moves nothing more
    (aside,) = moved_aside(model_dir)
    assert aside.read_bytes() == bad
    assert sum("is corrupt" in r.getMessage() for r in caplog.records) == 1
    assert not any("was missing" in r.getMessage() for r in caplog.records)


def test_the_wal_and_shm_of_a_corrupt_file_move_along_with_it(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path)
    store.save(record())
    with closing(sqlite3.connect(store.path)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM projects").fetchone()  # holds the -wal and -shm open
        wal = Path(f"{store.path}-wal").read_bytes()
        store.path.write_bytes(garbage(tmp_path))
        assert store.get("3.1700000000") is None
        (aside,) = moved_aside(tmp_path)
        assert Path(f"{aside}-wal").read_bytes() == wal and Path(f"{aside}-shm").exists()
    store.save(record(version="v2"))
    assert store.all() == [record(version="v2")]


def test_errors_that_are_not_the_files_fault_are_raised_and_move_nothing(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path)
    store.save(record())
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        store._db.run(lambda db: db.execute("SELECT missing_column FROM projects"))
    assert moved_aside(tmp_path) == [] and store.all() == [record()]


def test_a_store_that_met_corruption_late_does_not_move_the_fresh_store_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, late = ProjectStore(tmp_path), ProjectStore(tmp_path)  # as in two worker processes
    first.path.write_bytes(garbage(tmp_path))
    heal = late._db._heal

    def first_recovers_meanwhile(*args: Any) -> bool:
        first.save(record("1.1"))  # recovers: moves the corrupt file aside, starts a fresh one, writes to it
        return heal(*args)

    monkeypatch.setattr(late._db, "_heal", first_recovers_meanwhile)
    late.save(record("2.1"))  # failed on the corrupt file before the recovery
    assert len(moved_aside(tmp_path)) == 1
    assert sorted(r.project for r in late.all()) == ["1.1", "2.1"]


def _save_when_released(model_dir: str, project: str, barrier: Any) -> None:
    barrier.wait()
    ProjectStore(Path(model_dir)).save(record(project))


def _open_then_save(model_dir: str, project: str, barrier: Any) -> None:
    store = ProjectStore(Path(model_dir))
    barrier.wait()  # store open everywhere
    barrier.wait()  # the parent has corrupted the file
    for _ in range(20):
        store.save(record(project))


@pytest.mark.parametrize("worker", [_save_when_released, _open_then_save], ids=["at-start", "while-running"])
def test_processes_that_meet_corruption_together_move_it_once_and_lose_no_fresh_write(
    tmp_path: Path, worker: Callable[..., None]
) -> None:
    model_dir = tmp_path / "model_dir"
    ProjectStore(model_dir).save(record("old"))
    if worker is _save_when_released:
        (model_dir / "prelabel.sqlite3").write_bytes(garbage(tmp_path))
    context = multiprocessing.get_context("spawn")  # fork would copy other tests' threads mid-lock
    n = 6
    barrier = context.Barrier(n + (worker is _open_then_save))
    processes = [context.Process(target=worker, args=(str(model_dir), f"{i}.1", barrier)) for i in range(n)]
    for process in processes:
        process.start()
    if worker is _open_then_save:
        barrier.wait()
        (model_dir / "prelabel.sqlite3").write_bytes(garbage(tmp_path))
        barrier.wait()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * n
    assert len(moved_aside(model_dir)) == 1
    assert sorted(r.project for r in ProjectStore(model_dir).all()) == [f"{i}.1" for i in range(n)]
