"""The project store heals under the real server with two workers: deleted or corrupt, it never costs a restart."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import requests

from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, data_uri, make_task

ROUNDS = 6  # requests land on either worker: several rounds make both meet the damaged file


def setup_and_predict(server: PrelabelServer, tiny_dir: Path) -> None:
    """What Label Studio does for every batch: /setup, then /predict with the project key only."""
    body = {"project": "7.1", "schema": RECT_CONFIG, "extra_params": {"detection": {"model_id": str(tiny_dir)}}}
    setup = requests.post(f"{server.url}/setup", json=body, timeout=10)
    assert setup.status_code == 200, server.log_tail()
    tasks = [make_task(1, data_uri())]
    predict = requests.post(f"{server.url}/predict", json={"project": "7.1", "tasks": tasks}, timeout=60)
    assert predict.status_code == 200, server.log_tail()
    assert predict.json()["results"][0]["model_version"] == setup.json()["model_version"]


def store_path(server: PrelabelServer) -> Path:
    return server.work_dir / "model_dir" / "prelabel.sqlite3"


def moved_aside(server: PrelabelServer) -> list[Path]:
    files = (server.work_dir / "model_dir").glob("prelabel.sqlite3.corrupt-*")
    return [p for p in files if not p.name.endswith(("-wal", "-shm"))]


def test_a_store_deleted_or_corrupted_while_serving_heals_on_the_next_calls(
    tmp_path: Path, tiny: Callable[[str], Path]
) -> None:
    with PrelabelServer(tmp_path, workers=2) as server:
        setup_and_predict(server, tiny("grounding_dino"))

        store_path(server).unlink()
        for _ in range(ROUNDS):
            setup_and_predict(server, tiny("grounding_dino"))
        assert stat.S_IMODE(store_path(server).stat().st_mode) == 0o600

        store_path(server).write_bytes(os.urandom(32 * 1024))
        for _ in range(ROUNDS):
            setup_and_predict(server, tiny("grounding_dino"))
        assert requests.get(f"{server.url}/versions?project=7", timeout=10).json()["versions"]
        log = server.log_text()
    assert len(moved_aside(server)) == 1 and log.count(" is corrupt (") == 1
    assert '" 500 ' not in log


def test_the_server_boots_and_answers_on_a_corrupt_store(tmp_path: Path, tiny: Callable[[str], Path]) -> None:
    damage = os.urandom(32 * 1024)
    (tmp_path / "model_dir").mkdir()
    damaged = tmp_path / "model_dir" / "prelabel.sqlite3"
    damaged.write_bytes(damage)
    with PrelabelServer(tmp_path, workers=2) as server:
        setup_and_predict(server, tiny("grounding_dino"))
        log = server.log_text()
    assert [p.read_bytes() for p in moved_aside(server)] == [damage]
    assert log.count(" is corrupt (") == 1
