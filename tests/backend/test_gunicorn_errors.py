from __future__ import annotations

import json
import os
import socket

import pytest
from flask import Flask
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.errors import InvalidChunkSize, LimitRequestHeaders, NoMoreData

from backend.gunicorn_errors import JsonErrorWorker, answer_body_errors


def test_an_unexpected_error_is_a_json_500_that_does_not_echo_the_exception() -> None:
    cfg = Config()
    worker = JsonErrorWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg))
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        try:
            raise RuntimeError("internal detail")
        except RuntimeError as exc:
            worker.handle_error(None, server_side, ("127.0.0.1", 5000), exc)
        head, _, body = client_side.recv(65536).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 500 Internal Server Error"
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "internal error; see the prelabel log"}


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (InvalidChunkSize(b"zz"), 400, "unreadable request body: Invalid chunk size: b'zz'"),
        (LimitRequestHeaders("limit request trailer section size"), 431,
         "unreadable request body: limit request trailer section size"),
        (NoMoreData(), 400, "unreadable request body: it ended early"),
    ],
)  # fmt: skip
def test_a_body_the_app_cannot_read_is_a_json_4xx(exc: Exception, status: int, error: str) -> None:
    app = Flask(__name__)
    answer_body_errors(app)

    @app.post("/setup")
    def read_body() -> str:
        raise exc  # as gunicorn's body reader raises inside request.get_json()

    response = app.test_client().post("/setup")
    assert (response.status_code, response.json) == (status, {"error": error})
