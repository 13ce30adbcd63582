"""Outbound requests: one destination rule for credentials and the private-address check, deadlines, no cookies."""

from __future__ import annotations

import io
import socket
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace

import pytest
import requests
from flask import Response, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import outbound
from backend.errors import MediaError
from backend.ls_client import LabelStudioClient
from backend.media import MediaFetcher
from backend.settings import ServerSettings
from tests.helpers import LocalServer, image_bytes

LS_URL = "http://ls.internal:8080"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
# Names the fake resolver knows: Label Studio on a private address, public hosts, and private ones.
RESOLVE = {
    "ls.internal": "10.1.2.3",
    "images.example.com": "93.184.216.34",
    "attacker.example.net": "8.8.8.8",
    "8.8.8.8": "8.8.8.8",
    "127.0.0.1": "127.0.0.1",
    "10.1.2.3": "10.1.2.3",
    "169.254.169.254": "169.254.169.254",
    "metadata.internal": "169.254.169.254",
    "localhost": "127.0.0.1",
}


@dataclass
class Sent:
    """What reached the transport: the connection pool's host and port, and the Authorization header."""

    scheme: str
    host: str
    port: int
    authorization: str | None


class RecordingAdapter(outbound._WatchedAdapter):
    """Records the connection the request would really use (the pool requests picks), answers with a PNG."""

    def __init__(self, sent: list[Sent]) -> None:
        super().__init__()
        self.sent = sent

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout=None, verify=True, cert=None,
             proxies=None) -> requests.Response:  # fmt: skip
        pool = self.get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        self.sent.append(Sent(pool.scheme, pool.host, pool.port, request.headers.get("Authorization")))
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(image_bytes(4, 4))
        response.request = request
        response.url = request.url or ""
        return response


@contextmanager
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    resolved: list[str] = []

    def getaddrinfo(host: str, port: object, *args: object) -> list[tuple]:
        resolved.append(host)
        if host not in RESOLVE:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (RESOLVE[host], 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield resolved


def recording_fetcher(sent: list[Sent], **overrides: object) -> MediaFetcher:
    media = MediaFetcher(replace(ServerSettings(), **overrides))
    for scheme in ("http://", "https://"):
        media.session.mount(scheme, RecordingAdapter(sent))
    return media


SCHEMES = st.sampled_from(["http", "https", "HTTP", "hTTps"])
HOSTS = st.sampled_from(["ls.internal", "images.example.com", "attacker.example.net", "127.0.0.1", "8.8.8.8",
                         "metadata.internal", "LS.Internal", "ls.internal.", "127.1", "0x7f.0.0.1", "[::1]", ""])  # fmt: skip
PORTS = st.sampled_from(["", ":8080", ":80", ":443", ":08080", ":65536", ":"])
NOISE = st.text(alphabet=string.ascii_letters + string.digits + "@:\\/?#%.[]- \t\r\n\x00é_~;=&", max_size=12)


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    """URLs built from pieces parsers are known to disagree on: user info, backslashes, ports, odd hosts."""
    userinfo = draw(st.sampled_from(["", "a@", "ls.internal:8080@", "u:p@", "attacker.example.net:1\\@",
                                     "ls.internal:8080\\@", "%40@"]))  # fmt: skip
    tail = draw(st.sampled_from(["", "\\@ls.internal:8080", "\\@8.8.8.8", "@ls.internal:8080", "#@attacker.example.net",
                                 "?@ls.internal:8080", "\\\\attacker.example.net"]))  # fmt: skip
    path = draw(st.sampled_from(["/x.png", "/data/upload/1/a.png", "", "/%2e%2e/x.png"]))
    url = f"{draw(SCHEMES)}://{userinfo}{draw(HOSTS)}{draw(PORTS)}{tail}{path}{draw(NOISE)}"
    return url


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=hostile_urls())
def test_credentials_only_reach_label_studio_and_nothing_private_is_reached(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        media = recording_fetcher(sent)
        ls = LabelStudioClient(LS_URL, TOKEN, media.session)
        with suppress(MediaError):
            media.load(url, task_id=1, ls=ls)
    for request_sent in sent:
        destination = (request_sent.scheme, request_sent.host, request_sent.port)
        if request_sent.authorization is not None:
            assert destination == ("http", "ls.internal", 8080), url
        else:
            # anything else that was contacted must be public
            assert RESOLVE.get(request_sent.host) in ("93.184.216.34", "8.8.8.8"), (url, destination)


@pytest.mark.parametrize(
    ("url", "reached"),
    [
        ("http://127.0.0.1:8000\\@8.8.8.8/x.jpg", None),  # one parser says 8.8.8.8, the client connects to 127.0.0.1
        ("http://attacker.example.net:1\\@ls.internal:8080/x.jpg", None),  # would carry the token to the attacker
        ("http://ls.internal:8080@attacker.example.net/x.jpg", None),  # user info
        ("http://ls.internal:8080/data/upload/1/x.jpg", ("http", "ls.internal", 8080, f"Token {TOKEN}")),
        ("http://LS.internal:8080/data/upload/1/x.jpg", ("http", "ls.internal", 8080, f"Token {TOKEN}")),
        ("http://ls.internal:80/x.jpg", None),  # Label Studio's host on another port: private, refused
        ("https://ls.internal:8080/x.jpg", None),  # another scheme
        ("http://images.example.com/x.jpg", ("http", "images.example.com", 80, None)),
        ("http://127.1/x.jpg", None),
        ("http://2130706433/x.jpg", None),
        ("http://metadata.internal/latest", None),
        ("http://images.example.com\t.evil/x.jpg", None),
    ],
)
def test_each_url_is_judged_by_where_the_connection_goes(
    url: str, reached: tuple | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        media = recording_fetcher(sent)
        ls = LabelStudioClient(LS_URL, TOKEN, media.session)
        if reached is None:
            with pytest.raises(MediaError):
                media.load(url, task_id=1, ls=ls)
            assert sent == []
        else:
            media.load(url, task_id=1, ls=ls)
            assert [(s.scheme, s.host, s.port, s.authorization) for s in sent] == [reached]


def test_an_allowed_entry_may_name_a_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        media = recording_fetcher(sent, media_allowed_hosts=frozenset({"ls.internal:9000"}))
        media.load("http://ls.internal:9000/bucket/x.png", task_id=1, ls=None)
        with pytest.raises(MediaError, match="non-public address 10.1.2.3"):
            media.load("http://ls.internal:9001/bucket/x.png", task_id=1, ls=None)
    assert [(s.host, s.port) for s in sent] == [("ls.internal", 9000)]


@pytest.mark.parametrize(
    "url",
    ["http://a\\b/x", "http://u@h/x", "http://h\x00/x", "ftp://h/x", "http://%68/x", "http://exämple.com/x",
     "http://0177.0.0.1/", "http://1.2.3/", "http:///x", "http://h x/"],
)  # fmt: skip
def test_urls_parsers_disagree_on_are_refused(url: str) -> None:
    with pytest.raises(outbound.UnsafeURL):
        outbound.check_url(url)


@pytest.mark.parametrize("url", ["http://example.com/a b.png?x=1#f", "https://1.2.3.4:8443/x", "http://[::1]:8080/",
                                 "http://bad1.de/x.png", "http://cafe.be/x"])  # fmt: skip
def test_ordinary_urls_pass(url: str) -> None:
    outbound.check_url(url)


def _slow_http_server(header_delay: float, body_delay: float) -> tuple[str, threading.Event]:
    """A raw HTTP server on 127.0.0.1 that trickles its status line and headers, then its body, byte by byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: " + b"a" * 200:
                        if stop.is_set():
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(header_delay)
                    conn.sendall(b"\r\nContent-Length: 1000\r\n\r\n")
                    for _ in range(1000):
                        conn.sendall(b"x")
                        time.sleep(body_delay)
                except OSError:
                    continue
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x.png", stop


@pytest.mark.parametrize(("header_delay", "body_delay"), [(0.05, 0.0), (0.0, 0.05)])
def test_a_trickling_server_cannot_outlast_the_whole_transfer_timeout(header_delay: float, body_delay: float) -> None:
    url, stop = _slow_http_server(header_delay, body_delay)
    media = MediaFetcher(replace(ServerSettings(), media_timeout=1.0, media_allowed_hosts=frozenset({"127.0.0.1"})))
    started = time.monotonic()
    try:
        with pytest.raises(MediaError, match="took longer than PRELABEL_MEDIA_TIMEOUT"):
            media.load(url, task_id=1, ls=None)
        assert time.monotonic() - started < 1.6
    finally:
        stop.set()


def test_no_cookie_set_by_label_studio_reaches_another_port_of_its_host(server: LocalServer) -> None:
    with LocalServer() as bucket:
        bucket.cookies = []  # type: ignore[attr-defined]

        @server.app.get("/data/upload/1/a.png")
        def upload() -> Response:
            response = Response(image_bytes(4, 4), content_type="image/png")
            response.set_cookie("sessionid", "secret-session")
            return response

        @bucket.app.get("/b.png")
        def obj() -> Response:
            bucket.cookies.append(request.headers.get("Cookie"))  # type: ignore[attr-defined]
            return Response(image_bytes(4, 4), content_type="image/png")

        media = MediaFetcher(replace(ServerSettings(), media_allowed_hosts=frozenset({"127.0.0.1"})))
        ls = LabelStudioClient(server.url, TOKEN, media.session)
        media.load("/data/upload/1/a.png", task_id=1, ls=ls)
        media.load(bucket.url + "/b.png", task_id=1, ls=ls)
        assert bucket.cookies == [None]  # type: ignore[attr-defined]
        assert len(media.session.cookies) == 0


def test_the_scheme_is_case_insensitive_as_in_the_url_standard(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        recording_fetcher(sent).load("HTTP://images.example.com/x.png", task_id=1, ls=None)
    assert [(s.scheme, s.host) for s in sent] == [("http", "images.example.com")]


@pytest.mark.parametrize(
    "value",
    ["/api/current-user/token", "/api/projects/1/export?exportType=JSON", "/data/upload/../../api/projects",
     "/data/upload/%2e%2e/%2e%2e/api/projects", "/data%2fupload/x", "http://ls.internal:8080/api/projects",
     "http://ls.internal:8080/tasks/1/presign/../../api/x"],
)  # fmt: skip
def test_task_images_cannot_make_prelabel_read_label_studios_api(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        media = recording_fetcher(sent)
        with pytest.raises(MediaError, match="not one of its media paths"):
            media.load(value, task_id=1, ls=LabelStudioClient(LS_URL, TOKEN, media.session))
    assert sent == []


def test_media_paths_behind_a_base_path_are_fetched_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Sent] = []
    with fake_dns(monkeypatch):
        media = recording_fetcher(sent)
        ls = LabelStudioClient(LS_URL + "/label-studio", TOKEN, media.session)
        media.load("/data/upload/3/a.png", task_id=1, ls=ls)
        with pytest.raises(MediaError, match="not one of its media paths"):
            media.load("http://ls.internal:8080/data/upload/3/a.png", task_id=1, ls=ls)  # outside the base path
    assert [s.authorization for s in sent] == [f"Token {TOKEN}"]


def test_label_studio_api_calls_never_follow_a_redirect_with_the_token(server: LocalServer) -> None:
    from backend.ls_client import LabelStudioAPIError
    from tests.backend.test_media import PAT

    with LocalServer() as elsewhere:
        elsewhere.seen = []  # type: ignore[attr-defined]

        @elsewhere.app.route("/<path:path>", methods=["GET", "POST"])
        def steal(path: str) -> Response:
            elsewhere.seen.append((path, request.headers.get("Authorization"), request.get_data()))  # type: ignore[attr-defined]
            return Response("{}", content_type="application/json")

        @server.app.route("/api/<path:path>", methods=["GET", "POST"])
        def redirect(path: str) -> Response:
            return Response(status=307, headers={"Location": f"{elsewhere.url}/steal"})

        session = outbound.make_session()
        legacy = LabelStudioClient(server.url, TOKEN, session)
        with pytest.raises(LabelStudioAPIError, match="answered a redirect"):
            legacy.get_json("/api/tasks")
        assert legacy.check_credentials() is None
        with pytest.raises(PermissionError):  # the PAT exchange is refused, not followed
            LabelStudioClient(server.url, PAT, session).headers()
        assert elsewhere.seen == []  # type: ignore[attr-defined]
