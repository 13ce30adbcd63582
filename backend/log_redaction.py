"""Secrets out of every log line: credentials in query strings, secret headers and URLs are masked.

Label Studio puts the webhook secret in ``/webhook?secret=...`` and presigned image URLs carry signatures, and
those URLs reach many log lines: gunicorn's access and error logs, werkzeug's request log, exception messages
of ``requests``. Redaction is installed once per process as the log record factory, so it covers every logger and
every handler alike, including the handlers gunicorn creates later (on a log reopen).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["REDACTED", "install_log_redaction", "redact"]

REDACTED = "[REDACTED]"

# Parameter names that hold credentials (case-insensitive): anything containing one of the words, plus a few
# short names used by cloud storage (Azure SAS ``sig``) and APIs (``key``, ``auth``).
_NAME = (
    r"[\w.-]*(?:secret|token|passw(?:or)?d|signature|credential|api[_-]?key|private[_-]?key)[\w.-]*"
    r"|key|sig|pwd|auth"
)
_PATTERNS = (
    # name=value in a query string or a log text, also percent-encoded inside another URL (%3F, %26, %3D)
    re.compile(rf"(?i)((?:^|[?&;\s]|%3F|%26)(?:{_NAME})(?:=|%3D))[^\s&#\"']+"),
    # "name": "value" in JSON or a repr'd dict
    re.compile(rf"""(?i)((["'])(?:{_NAME})\2\s*:\s*(["']))(?:(?!\3).)+"""),
    # secret request headers, as a gunicorn error may quote them
    re.compile(
        r"(?i)(\b(?:(?:proxy-)?authorization|cookie|x-[\w-]*(?:secret|token|signature|key)[\w-]*)\s*:\s*)[^'\"\r\n]+"
    ),
    # passwords in URLs: scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)"),
)
# Every pattern's group 1 is what precedes the secret (its name); the secret itself goes.
_KEEP_NAME = rf"\g<1>{REDACTED}"


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[REDACTED]``.

    Example:
        >>> redact('"POST /webhook?secret=s3cr3t&project=1 HTTP/1.1" 200')
        '"POST /webhook?secret=[REDACTED]&project=1 HTTP/1.1" 200'
    """
    for pattern in _PATTERNS:
        text = pattern.sub(_KEEP_NAME, text)
    return text


class _RedactingRecordFactory:
    """Builds records through the previous factory, then redacts their message, traceback and stack."""

    _tracebacks = logging.Formatter()

    def __init__(self, make: Any) -> None:
        self._make = make

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self._make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: never raise into the caller, never lose them
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self._tracebacks.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record


def install_log_redaction() -> None:
    """Redact every log record this process creates from now on; calling it again changes nothing."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(current))
