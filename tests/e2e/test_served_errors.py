"""Errors gunicorn answers itself, before or around the app, are JSON too: raw requests to the real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.prelabel_server import PrelabelServer

CHUNKED_POST = (
    b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)

# (raw request, status, text the error names)
CASES = {
    "request line over the limit": (b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "Request Line is too large"),
    "too many headers": (
        b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
        431, "limit request headers fields",
    ),
    "header over the limit": (b"GET /health HTTP/1.1\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431, "fields size"),
    "request line without a version": (b"GET /health\r\n\r\n", 400, "Invalid HTTP request line"),
    "invalid method": (b"G@T /health HTTP/1.1\r\n\r\n", 400, "Invalid HTTP method"),
    "invalid version": (b"GET /health HTTP/9.9\r\n\r\n", 400, "Invalid HTTP Version"),
    "invalid header name": (b"GET /health HTTP/1.1\r\nBad Header: v\r\n\r\n", 400, "Invalid HTTP header name"),
    "invalid content length": (b"POST /setup HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "CONTENT-LENGTH"),
    "unsupported transfer coding": (b"POST /setup HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n", 501, "transfer coding"),
    "bad chunk size": (CHUNKED_POST + b"zz\r\n{}\r\n0\r\n\r\n", 400, "Invalid chunk size"),
    "bad chunk terminator": (CHUNKED_POST + b"2\r\n{}XX0\r\n\r\n", 400, "chunk terminator"),
    "bad chunk extension": (CHUNKED_POST + b"2;a\x00b\r\n{}\r\n0\r\n\r\n", 400, "chunk extension"),
    "body cut short": (CHUNKED_POST + b"9\r\n{}", 400, "unreadable request body: it ended early"),
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrelabelServer]:
    with PrelabelServer(tmp_path_factory.mktemp("prelabel-errors"), workers=1) as running:
        yield running


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP response in what a connection received: (status, headers, body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", len(rest)))
        found.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


@pytest.mark.parametrize(("request_bytes", "status", "names"), CASES.values(), ids=CASES.keys())
def test_every_malformed_request_gets_one_json_error_with_its_status(
    server: PrelabelServer, request_bytes: bytes, status: int, names: str
) -> None:
    ((got, headers, body),) = responses(server.send_raw(request_bytes))
    assert got == status
    assert headers["content-type"] == "application/json"
    assert names in json.loads(body)["error"]


def test_a_malformed_body_the_app_did_not_read_closes_the_connection_after_one_answer(server: PrelabelServer) -> None:
    raw = server.send_raw(b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    ((status, _, body),) = responses(raw)
    assert status == 200 and json.loads(body)["status"] == "UP"


def test_gunicorn_errors_keep_their_warning_and_access_log_lines(server: PrelabelServer) -> None:
    server.send_raw(b"POST /setup?from=access-log-test HTTP/1.1\r\nContent-Length: ten\r\n\r\n")
    log = server.log_text()
    assert re.search(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: Invalid HTTP Header: 'CONTENT-LENGTH'", log)
    assert '"POST /setup?from=access-log-test HTTP/1.1" 400' in log


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_a_413_and_the_connection_closes(tmp_path: Path, chunked: bool) -> None:
    body = b'{"tasks": ["' + b"x" * (2 << 20) + b'"]}'
    if chunked:
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        framing = b"Transfer-Encoding: chunked"
    else:
        payload, framing = body, b"Content-Length: %d" % len(body)
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"
    with PrelabelServer(tmp_path / "limits", {"PRELABEL_MAX_BODY_MB": "1"}, workers=1) as limited:
        ((status, headers, answer),) = responses(limited.send_raw(request + payload))
    assert status == 413 and "error" in json.loads(answer)
    assert headers["connection"] == "close"  # the unread rest of the body must not be taken for a next request
