"""Outbound HTTP (task images, Label Studio's API): one destination rule, whole-transfer deadlines, no cookies.

A request's destination is decided once, by the routine requests itself uses to pick the connection: the URL is
prepared by requests and its ``(scheme, host, port)`` read with the adapter's connection-pool key. Credentials and
the private-address check both follow that one answer, so a URL that two parsers read differently cannot send a
token to one host while being checked as another. URLs that parsers disagree on (backslashes, user info, control
characters, whitespace or non-ASCII in the authority, non-canonical numeric hosts) are refused before that.

``deadline(seconds)`` bounds a whole transfer, status line and headers included: a timer shuts down the sockets the
transfer reads from when time is up, so a server that trickles bytes cannot hold a worker.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import parse_url

__all__ = ["Deadline", "Origin", "UnsafeURL", "deadline", "destination", "make_session", "prepare"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY_BAD = re.compile(r"[\s\x00-\x1f\x7f@\\%]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)
_MAX_URL = 16384


class UnsafeURL(ValueError):
    """A URL that prelabel will not request: malformed, or read differently by different parsers."""


@dataclass(frozen=True)
class Origin:
    """Where a request connects: scheme, lower-case host (IPv6 without brackets) and port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def check_url(url: str) -> None:
    """Refuse URLs whose destination two parsers could read differently.

    Raises:
        UnsafeURL: Not ``http(s)``, too long, control characters anywhere, a backslash anywhere, user info, whitespace,
            ``%`` or non-ASCII characters in the authority, a port out of range, or a numeric host that is not a
            canonical IP address (``127.1``, ``0x7f.0.0.1``, ``2130706433``).
    """
    if len(url) > _MAX_URL:
        raise UnsafeURL(f"URL is longer than {_MAX_URL} characters")
    if _CONTROL.search(url):
        raise UnsafeURL("URL holds control characters")
    if "\\" in url:
        raise UnsafeURL("URL holds a backslash (parsers disagree on where its host ends)")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS:
        raise UnsafeURL("only http:// and https:// URLs can be fetched")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority:
        raise UnsafeURL("URL has no host")
    if _AUTHORITY_BAD.search(authority) or not authority.isascii():
        raise UnsafeURL(f"URL authority {authority[:80]!r} holds user info, whitespace, '%' or non-ASCII characters")
    parts = urlsplit(url)
    host = parts.hostname or ""
    _ = parts.port  # raises ValueError (a MediaError upstream) for a port out of range
    strict = parse_url(url)
    if (strict.host or "").lower().strip("[]") != host:
        raise UnsafeURL(f"URL host is ambiguous: {host!r} or {strict.host!r}")
    labels = host.rstrip(".").split(".")
    if ":" not in host and all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise UnsafeURL(f"numeric host {host!r} is not a canonical IPv4 address")


def prepare(session: requests.Session, url: str, headers: dict[str, str] | None = None) -> requests.PreparedRequest:
    """A GET for ``url``, prepared exactly as ``session.send`` will send it.

    Raises:
        UnsafeURL: See ``check_url``.
    """
    check_url(url)
    return session.prepare_request(requests.Request("GET", url, headers=headers))


def destination(session: requests.Session, prepared: requests.PreparedRequest) -> Origin:
    """The ``(scheme, host, port)`` the session will connect to for ``prepared``, read the way requests reads it."""
    adapter = session.get_adapter(prepared.url or "")
    if not isinstance(adapter, HTTPAdapter):
        raise UnsafeURL(f"no HTTP adapter for {prepared.url!r}")
    params, _ = adapter.build_connection_pool_key_attributes(prepared, verify=True)
    scheme = str(params["scheme"]).lower()
    host = str(params["host"] or "").lower()
    if not host:
        raise UnsafeURL("URL has no host")
    return Origin(scheme, host, int(params["port"] or _DEFAULT_PORTS.get(scheme, 80)))


def origin_of(session: requests.Session, base_url: str) -> Origin:
    """The destination of a base URL such as ``LABEL_STUDIO_URL``, by the same rule as every request."""
    return destination(session, prepare(session, base_url))


class Deadline:
    """A point in time after which the sockets of one transfer are shut down (see ``deadline``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        """Seconds left, at least a millisecond (requests refuses a zero timeout)."""
        return max(self.expires - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        if sock is None:
            return
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return
        _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every request this thread makes inside the block to ``seconds`` in all, bytes of the body included."""
    clock = Deadline(seconds)
    previous = getattr(_current, "deadline", None)
    _current.deadline = clock
    clock._timer.start()
    try:
        yield clock
    finally:
        clock._timer.cancel()
        _current.deadline = previous


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        clock = getattr(_current, "deadline", None)
        if clock is not None:
            clock.watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    getresponse = _WatchedHTTPConnection.getresponse


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


def make_session(pool_size: int = 8) -> requests.Session:
    """A session for outbound requests: deadline-aware connections, no cookies, nothing taken from the environment.

    Cookies would carry Label Studio's session to any host sharing its name (cookies ignore ports); ``trust_env``
    would add ``.netrc`` credentials and proxies the destination rule cannot see.
    """
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(_NoCookies())
    for scheme in ("http://", "https://"):
        session.mount(scheme, _WatchedAdapter(pool_maxsize=pool_size))
    session.headers["User-Agent"] = "prelabel"
    return session
