"""gunicorn's own HTTP errors, answered in JSON like every other error of the server.

gunicorn answers a request it cannot parse itself, with an HTML page, before the app sees it: a request line
over ``limit_request_line`` (414), too many or too large headers (431), a bad request line, method, version or
header (400), an unsupported transfer coding (501). ``JsonErrorWorker`` keeps gunicorn's decision (the status,
the warning and the access-log line) and sends ``{"error": ...}`` instead. A malformed body (bad chunked
encoding) only shows while the app reads it: ``answer_body_errors`` answers that with a 4xx, not a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify, request
from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, NoMoreData, ParseException
from gunicorn.workers.gthread import ThreadWorker

from backend import metrics

__all__ = ["JsonErrorWorker", "answer_body_errors", "close_after_refused_body"]

log = logging.getLogger(__name__)


class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    """The gthread worker, with JSON error answers (``prelabel serve`` runs it)."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Let gunicorn pick the status and log the error, then answer ``{"error": ...}`` with that status."""
        page = _ErrorPage()
        super().handle_error(req, page, addr, exc)
        message = "internal error; see the prelabel log" if page.status == 500 else str(exc)
        try:
            util.write_nonblock(client, _json_answer(page.status, message))
        except Exception:
            self.log.debug("Failed to send error message.")

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Close a connection whose unread body turns out malformed, without answering twice.

        After the response, gthread drains the body the app did not read; gunicorn would answer a parse error
        there as if nothing had been sent yet, putting a second response on the connection.
        """
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except ParseException as exc:
            self.log.warning("Invalid request body after the response, closing: %s", exc)
            return False


class _ErrorPage:
    """Stands in for the client socket while gunicorn writes its HTML error page, and keeps only the status."""

    status = 500

    def gettimeout(self) -> float:
        return 0.0  # non-blocking: gunicorn writes the page in one ``sendall``

    def sendall(self, data: bytes) -> None:
        self.status = int(data.split(b" ", 2)[1])  # "HTTP/1.1 414 URI Too Long\r\n..."


def _json_answer(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def answer_body_errors(app: Flask) -> None:
    """Answer a body gunicorn cannot read (bad chunks or trailers, the client gone mid-body) with 400 or 431."""

    def malformed_body(exc: Exception) -> tuple[Response, int]:
        metrics.ERRORS.labels("request").inc()
        reason = f"unreadable request body: {'it ended early' if isinstance(exc, NoMoreData) else exc}"
        log.warning("%s %s: %s", request.method, request.path, reason)
        return jsonify(error=reason), 431 if isinstance(exc, LimitRequestHeaders) else 400

    app.register_error_handler(ParseException, malformed_body)
    app.register_error_handler(NoMoreData, malformed_body)


def close_after_refused_body(app: Flask) -> None:
    """Close the connection after a 413: the refused body is still unread, so nothing after it can be parsed.

    gunicorn ignores an app's ``Connection: close`` and would try to drain the body instead (and give up on a large
    one, leaving a keep-alive client waiting for an answer to its next request); its response object, whose
    ``start_response`` the app is called with, can be told to close.
    """
    wsgi = app.wsgi_app

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("413"):
                response = getattr(start_response, "__self__", None)
                if response is not None and hasattr(response, "force_close"):
                    response.force_close()
            return start_response(status, headers, exc_info)

        return wsgi(environ, start)

    app.wsgi_app = wrapped  # type: ignore[method-assign]
