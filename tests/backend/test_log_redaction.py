from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from backend.app import create_app
from backend.log_redaction import REDACTED, install_log_redaction, redact
from backend.settings import ServerSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"POST /webhook?secret=s3&project=1 HTTP/1.1" 200', '"POST /webhook?secret=[REDACTED]&project=1 HTTP/1.1" 200'),
        ("/a.png?X-Amz-Signature=ab12&X-Amz-Credential=AK%2F1&X-Amz-Date=1",
         "/a.png?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]&X-Amz-Date=1"),
        ("?TOKEN=t&Access_Token=a&api_key=k&apikey=k&Key=k&password=p&sig=s&pwd=p&auth=a&x=1",
         "?TOKEN=[REDACTED]&Access_Token=[REDACTED]&api_key=[REDACTED]&apikey=[REDACTED]&Key=[REDACTED]"
         "&password=[REDACTED]&sig=[REDACTED]&pwd=[REDACTED]&auth=[REDACTED]&x=1"),
        ("Invalid HTTP request line: 'GET /webhook?secret=s3'", "Invalid HTTP request line: 'GET /webhook?secret=[REDACTED]'"),
        ("next=https%3A%2F%2Fh%2Fa%3Ftoken%3Dt0k", "next=https%3A%2F%2Fh%2Fa%3Ftoken%3D[REDACTED]"),
        ('{"access_token": "t0k", "hostname": "h"}', '{"access_token": "[REDACTED]", "hostname": "h"}'),
        ("{'password': 'pw', 'user': 'u'}", "{'password': '[REDACTED]', 'user': 'u'}"),
        ("Invalid HTTP Header: 'X-Prelabel-Webhook-Secret: s3'", "Invalid HTTP Header: 'X-Prelabel-Webhook-Secret: [REDACTED]'"),
        ("Authorization: Token abc", "Authorization: [REDACTED]"),
        ("fetching http://user:pa55@host/a.png", "fetching http://user:[REDACTED]@host/a.png"),
        ('"GET /versions?project=3 HTTP/1.1" 200 17', '"GET /versions?project=3 HTTP/1.1" 200 17'),
        ("task 4: image 'image': HTTP 404 fetching /data/upload/1/a.png", "task 4: image 'image': HTTP 404 fetching /data/upload/1/a.png"),
    ],
)  # fmt: skip
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.fixture
def plain_logging() -> Iterator[None]:
    """No redaction installed (another test may have installed it in this process); put back afterwards."""
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    logging.setLogRecordFactory(previous)


@pytest.fixture
def redacting(plain_logging: None) -> None:
    install_log_redaction()


def test_messages_arguments_and_tracebacks_are_redacted(redacting: None, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("prelabel.test")
    log.warning("fetching %s", "http://h/a.png?token=arg-secret")
    try:
        raise ValueError("Max retries exceeded with url: /a.png?X-Amz-Signature=traceback-secret")
    except ValueError:
        log.exception("failed")
    log.warning("%s %s", "one argument missing: ?key=unformatted-secret")  # must not raise
    for secret in ("arg-secret", "traceback-secret", "unformatted-secret"):
        assert secret not in caplog.text
    assert caplog.messages[0] == f"fetching http://h/a.png?token={REDACTED}"
    assert f"ValueError: Max retries exceeded with url: /a.png?X-Amz-Signature={REDACTED}" in caplog.text
    assert f"?key={REDACTED}" in caplog.messages[2]


def test_installing_twice_redacts_once(redacting: None, caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    assert logging.getLogRecordFactory() is factory
    logging.getLogger("prelabel.test").warning("?secret=s3")
    assert caplog.messages[-1] == f"?secret={REDACTED}"


def test_the_flask_development_server_logs_no_secret(
    plain_logging: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, webhook_secret="dev-server-secret"))
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            url = f"http://127.0.0.1:{server.server_port}/webhook?secret=dev-server-secret"
            assert requests.post(url, json={"action": "PROJECT_UPDATED"}, timeout=10).status_code == 200
    finally:
        server.shutdown()
        thread.join(5)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert f"POST /webhook?secret={REDACTED} HTTP/1.1" in line and "dev-server-secret" not in caplog.text
