"""The real server's log: no secrets, one line per event, and no control socket in places shared with others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, data_uri, make_task

WEBHOOK_SECRET = "hook-s3cr3t-0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrelabelServer]:
    work_dir = tmp_path_factory.mktemp("prelabel-logs")
    (work_dir / "home").mkdir()
    (work_dir / "xdg-runtime").mkdir()
    env = {
        "PRELABEL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PRELABEL_MEDIA_ALLOWED_HOSTS": "localhost",
        "LOG_LEVEL": "DEBUG",
        "HOME": str(work_dir / "home"),
        "XDG_RUNTIME_DIR": str(work_dir / "xdg-runtime"),
    }
    with PrelabelServer(work_dir, env, workers=1) as running:
        yield running


def setup_tiny_detector(server: PrelabelServer, tiny_dir: Path, project: str) -> None:
    body = {"project": project, "schema": RECT_CONFIG, "extra_params": {"detection": {"model_id": str(tiny_dir)}}}
    assert requests.post(f"{server.url}/setup", json=body, timeout=10).status_code == 200


def test_secrets_sent_in_requests_never_reach_the_log(server: PrelabelServer, tiny: Callable[[str], Path]) -> None:
    url = server.url
    event = {"action": "PROJECT_UPDATED", "project": {"id": 1}}
    assert requests.post(f"{url}/webhook?secret={WEBHOOK_SECRET}", json=event, timeout=10).status_code == 200
    assert requests.post(f"{url}/webhook?SECRET=wrong-s3cr3t-0002", json=event, timeout=10).status_code == 401
    header = {"X-Prelabel-Webhook-Secret": WEBHOOK_SECRET}
    assert requests.post(f"{url}/webhook", json=event, headers=header, timeout=10).status_code == 200
    assert requests.get(f"{url}/versions?project=1&access_token=query-s3cr3t-0003", timeout=10).status_code == 200
    # gunicorn's own errors quote the request line, and log an access line once the request line is read
    server.send_raw(b"GET /webhook?secret=line-s3cr3t-0004\r\n\r\n")
    server.send_raw(b"POST /predict?api_key=access-s3cr3t-0005 HTTP/1.1\r\nContent-Length: ten\r\n\r\n")
    # prelabel's own log: an image URL whose fetch fails ends up in an exception message, query string included
    setup_tiny_detector(server, tiny("grounding_dino"), "1.1")
    image = "http://localhost:9/a.png?X-Amz-Signature=presign-s3cr3t-0006&X-Amz-Credential=cred-s3cr3t-0007"
    predict = requests.post(f"{url}/predict", json={"project": "1.1", "tasks": [make_task(1, image)]}, timeout=60)
    assert predict.status_code == 200 and predict.json()["results"][0] == []

    log = server.log_text()
    assert "s3cr3t" not in log, [line for line in log.splitlines() if "s3cr3t" in line]
    for redacted in [
        '"POST /webhook?secret=[REDACTED] HTTP/1.1" 200',
        '"POST /webhook?SECRET=[REDACTED] HTTP/1.1" 401',
        '"GET /versions?project=1&access_token=[REDACTED] HTTP/1.1" 200',
        "Invalid HTTP request line: 'GET /webhook?secret=[REDACTED]'",
        '"POST /predict?api_key=[REDACTED] HTTP/1.1" 400',
        "/a.png?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]",
    ]:
        assert redacted in log


def test_loading_a_model_writes_one_line_and_no_progress_bar(
    server: PrelabelServer, tiny: Callable[[str], Path]
) -> None:
    setup_tiny_detector(server, tiny("grounding_dino"), "2.1")
    predict = requests.post(f"{server.url}/predict", json={"project": "2.1", "tasks": [make_task(1, data_uri())]},
                            timeout=60)  # fmt: skip
    assert predict.status_code == 200 and predict.json()["results"][0]["result"]
    log = server.log_text()
    assert "loaded grounding_dino" in log
    assert "\r" not in log and "it/s" not in log and "█" not in log


def test_no_control_socket_where_every_gunicorn_of_the_user_would_share_it(server: PrelabelServer) -> None:
    home, runtime = server.work_dir / "home", server.work_dir / "xdg-runtime"
    assert list(runtime.iterdir()) == [] and not (home / ".gunicorn").exists()
    assert not [p for p in server.work_dir.rglob("*") if p.is_socket()]
    assert "Control socket" not in server.log_text()
