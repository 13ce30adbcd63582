from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flask import Response, request
from PIL import Image

from backend import outbound
from backend.errors import MediaError
from backend.ls_client import LabelStudioClient, is_jwt
from backend.media import MediaFetcher, decode_image
from backend.settings import ServerSettings
from tests.helpers import LocalServer, image_array, image_bytes

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def jwt(**claims: object) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.signature"


PAT = jwt(token_type="refresh", exp=time.time() + 3600, jti="pat")


@pytest.fixture
def fake_ls(server: LocalServer) -> LocalServer:
    """A Label Studio stand-in: uploads need a legacy token or a refreshed PAT access token."""
    server.seen = []  # type: ignore[attr-defined]
    server.refreshes = 0  # type: ignore[attr-defined]

    @server.app.get("/data/upload/1/<name>")
    def upload(name: str) -> Response:
        server.seen.append(request.headers.get("Authorization"))  # type: ignore[attr-defined]
        auth = request.headers.get("Authorization", "")
        if auth == f"Token {LEGACY}" or (auth.startswith("Bearer ") and "access" in auth_claims(auth)):
            return Response(image_bytes(40, 30), content_type="image/png")
        return Response("unauthorized", status=401)

    @server.app.post("/api/token/refresh/")
    def refresh() -> Response:
        server.refreshes += 1  # type: ignore[attr-defined]
        if request.json != {"refresh": PAT}:
            return Response("bad", status=401)
        return Response(json.dumps({"access": jwt(token_type="access", exp=time.time() + 300)}))

    return server


def auth_claims(header: str) -> dict:
    payload = header.split()[1].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["token_type"]


def fetcher(**overrides: object) -> MediaFetcher:
    return MediaFetcher(replace(ServerSettings(), **overrides))


def client(ls: LocalServer, token: str | None) -> LabelStudioClient:
    return LabelStudioClient(ls.url, token, outbound.make_session())


def test_upload_path_with_legacy_token(fake_ls: LocalServer) -> None:
    image = fetcher().load("/data/upload/1/a.png", task_id=1, ls=client(fake_ls, LEGACY)).pixels
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert fake_ls.seen == [f"Token {LEGACY}"]  # type: ignore[attr-defined]


def test_personal_access_token_is_refreshed_once_and_cached(fake_ls: LocalServer) -> None:
    assert is_jwt(PAT) and not is_jwt(LEGACY)
    ls = client(fake_ls, PAT)
    media = fetcher()
    for _ in range(3):
        media.load("/data/upload/1/a.png", task_id=1, ls=ls)
    assert fake_ls.refreshes == 1  # type: ignore[attr-defined]
    assert all(h.startswith("Bearer ") and h != f"Bearer {PAT}" for h in fake_ls.seen)  # type: ignore[attr-defined]


def test_missing_credentials_give_a_clear_401_error(fake_ls: LocalServer) -> None:
    with pytest.raises(MediaError, match="HTTP 401.*LABEL_STUDIO_API_KEY"):
        fetcher().load("/data/upload/1/a.png", task_id=1, ls=client(fake_ls, None))


def test_relative_path_without_label_studio_url_is_explained() -> None:
    with pytest.raises(MediaError, match="set LABEL_STUDIO_URL"):
        fetcher().load("/data/upload/1/a.png", task_id=1, ls=None)


def test_cloud_uri_is_presigned_by_label_studio_and_credentials_stay_there(fake_ls: LocalServer) -> None:
    with LocalServer() as bucket:
        bucket.seen = []  # type: ignore[attr-defined]

        @bucket.app.get("/bucket/key.png")
        def obj() -> Response:
            bucket.seen.append(request.headers.get("Authorization"))  # type: ignore[attr-defined]
            return Response(image_bytes(20, 10), content_type="image/png")

        @fake_ls.app.get("/tasks/<int:task_id>/presign/")
        def presign(task_id: int) -> Response:
            fileuri = base64.urlsafe_b64decode(request.args["fileuri"]).decode()
            assert fileuri == "s3://bucket/key.png" and task_id == 7
            assert request.headers["Authorization"] == f"Token {LEGACY}"
            port = bucket.url.rsplit(":", 1)[1]
            return Response(status=303, headers={"Location": f"http://localhost:{port}/bucket/key.png?X-Sig=1"})

        media = fetcher(media_allowed_hosts=frozenset({"localhost"}))
        image = media.load("s3://bucket/key.png", task_id=7, ls=client(fake_ls, LEGACY)).pixels
        assert image.shape == (10, 20, 3)
        assert bucket.seen == [None]  # type: ignore[attr-defined]


def test_private_addresses_are_refused_unless_allowed(server: LocalServer) -> None:
    @server.app.get("/data/upload/1/img.png")
    def img() -> Response:
        return Response(image_bytes(), content_type="image/png")

    url = server.url + "/data/upload/1/img.png"
    with pytest.raises(MediaError, match="non-public address 127.0.0.1.*PRELABEL_MEDIA_ALLOWED_HOSTS"):
        fetcher().load(url, task_id=1, ls=None)
    allowed = fetcher(media_allowed_hosts=frozenset({"127.0.0.1"}))
    assert allowed.load(url, task_id=1, ls=None).pixels.shape == (48, 64, 3)
    # Label Studio's own origin is trusted even when it is local (for its media paths).
    assert fetcher().load(url, task_id=1, ls=client(server, None)).pixels.shape == (48, 64, 3)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png", "http://[::1]/x"])
def test_metadata_and_private_ranges_are_refused_without_a_request(url: str) -> None:
    with pytest.raises(MediaError, match="non-public address"):
        fetcher().load(url, task_id=1, ls=None)


def test_size_and_time_limits(server: LocalServer) -> None:
    @server.app.get("/big")
    def big() -> Response:
        return Response(b"x" * 5000, content_type="image/png")

    @server.app.get("/chunked")
    def chunked() -> Response:
        return Response((b"x" * 1000 for _ in range(10)), content_type="image/png")

    @server.app.get("/slow")
    def slow() -> Response:
        def body():
            for _ in range(20):
                time.sleep(0.1)
                yield b"x" * 10

        return Response(body(), content_type="image/png")

    local = frozenset({"127.0.0.1"})
    with pytest.raises(MediaError, match="over PRELABEL_MEDIA_MAX_BYTES=1000"):
        fetcher(media_max_bytes=1000, media_allowed_hosts=local).load(server.url + "/big", task_id=1, ls=None)
    with pytest.raises(MediaError, match="over PRELABEL_MEDIA_MAX_BYTES=2000"):
        fetcher(media_max_bytes=2000, media_allowed_hosts=local).load(server.url + "/chunked", task_id=1, ls=None)
    started = time.monotonic()
    with pytest.raises(MediaError, match="PRELABEL_MEDIA_TIMEOUT|timed out|Timeout"):
        fetcher(media_timeout=0.5, media_allowed_hosts=local).load(server.url + "/slow", task_id=1, ls=None)
    assert time.monotonic() - started < 1.5


def test_http_errors_and_non_images(server: LocalServer) -> None:
    @server.app.get("/text")
    def text() -> Response:
        return Response("hello", content_type="text/plain")

    media = fetcher(media_allowed_hosts=frozenset({"127.0.0.1"}))
    with pytest.raises(MediaError, match="HTTP 404"):
        media.load(server.url + "/missing.png", task_id=1, ls=None)
    with pytest.raises(MediaError, match="not a readable image"):
        media.load(server.url + "/text", task_id=1, ls=None)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    data = image_bytes(200, 100)
    with pytest.raises(MediaError, match="200x100 = 20000 pixels, over PRELABEL_MEDIA_MAX_PIXELS=10000"):
        decode_image(data, max_pixels=10_000)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    rotated = decode_image(image_bytes(64, 48, fmt="JPEG", exif=exif), max_pixels=10**6)
    assert rotated.pixels.shape == (64, 48, 3) and rotated.size_wh == (48, 64)


def test_local_files_are_read_from_the_document_root_and_cannot_escape(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "cat 1.png").write_bytes(image_bytes(10, 12))
    (tmp_path.parent / "secret.png").write_bytes(image_bytes())
    media = fetcher(local_files_document_root=tmp_path)
    assert media.load("/data/local-files/?d=dir/cat%201.png", task_id=1, ls=None).pixels.shape == (12, 10, 3)
    with pytest.raises(MediaError, match="outside LOCAL_FILES_DOCUMENT_ROOT"):
        media.load("/data/local-files/?d=../secret.png", task_id=1, ls=None)
    with pytest.raises(MediaError, match="not found"):
        media.load("/data/local-files/?d=dir/none.png", task_id=1, ls=None)


def test_data_uris_and_unsupported_values() -> None:
    uri = "data:image/png;base64," + base64.b64encode(image_bytes(8, 6)).decode()
    assert np.array_equal(fetcher().load(uri, task_id=None, ls=None).pixels, image_array(8, 6))
    for value, match in [
        (None, "must be a URL"),
        ("ftp://x/y.png", "unsupported image reference"),
        ("", "must be a URL"),
    ]:
        with pytest.raises(MediaError, match=match):
            fetcher().load(value, task_id=1, ls=None)


def test_a_server_dripping_bytes_cannot_outlast_the_timeout(server: LocalServer) -> None:
    @server.app.get("/drip")
    def drip() -> Response:
        def body():
            for _ in range(30):
                time.sleep(0.2)
                yield b"x"

        return Response(body(), content_type="image/png")

    started = time.monotonic()
    with pytest.raises(MediaError, match="took longer than PRELABEL_MEDIA_TIMEOUT"):
        media = fetcher(media_timeout=1.0, media_allowed_hosts=frozenset({"127.0.0.1"}))
        media.load(server.url + "/drip", task_id=1, ls=None)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("value", ["http://[abc/x.jpg", f"http://{'a' * 70}.com/x.png", "/data/local-files/?d=a%00b"])
def test_malformed_references_are_media_errors_not_crashes(value: str, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="unusable image reference|not found|outside"):
        fetcher(local_files_document_root=tmp_path).load(value, task_id=1, ls=None)


def test_16_bit_images_keep_their_high_byte_as_browsers_show_them() -> None:
    import io

    gray = np.full((4, 6), 60000, dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), max_pixels=100).pixels
    assert decoded.shape == (4, 6, 3) and (decoded == 60000 >> 8).all()


def test_fifos_and_devices_under_the_document_root_are_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dev").symlink_to("/dev/zero")
    (tmp_path / "folder").mkdir()
    media = fetcher(local_files_document_root=tmp_path, media_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(MediaError, match="not a regular file"):
        media.load("/data/local-files/?d=pipe.png", task_id=1, ls=None)
    assert time.monotonic() - started < 1.0
    with pytest.raises(MediaError, match="not a regular file"):  # a MediaError (the task's []), not a 500
        media.load("/data/local-files/?d=folder", task_id=1, ls=None)
    # /dev/zero resolves outside the root; inside it, a device would be refused the same way
    with pytest.raises(MediaError, match="outside LOCAL_FILES_DOCUMENT_ROOT|not a regular file"):
        media.load("/data/local-files/?d=dev", task_id=1, ls=None)


def test_cloud_uri_errors_say_which_uri_and_what_to_check(fake_ls: LocalServer) -> None:
    @fake_ls.app.get("/tasks/<int:task_id>/presign/")
    def presign(task_id: int) -> Response:
        fileuri = base64.urlsafe_b64decode(request.args["fileuri"]).decode()
        if fileuri.startswith("s3://uncovered/"):
            return Response(status=404)  # what Label Studio answers when no storage of the project covers the URI
        return Response(status=303, headers={"Location": "http://10.0.0.7:9000/minio/key.png?X-Amz-Signature=s"})

    media = fetcher()
    with pytest.raises(MediaError, match=r"could not give s3://uncovered/a.png.*covers this bucket and prefix"):
        media.load("s3://uncovered/a.png", task_id=3, ls=client(fake_ls, LEGACY))
    with pytest.raises(MediaError, match=r"10\.0\.0\.7:9000.*pre-signed URL Label Studio gave for s3://b/k.png") as err:
        media.load("s3://b/k.png", task_id=3, ls=client(fake_ls, LEGACY))
    assert "X-Amz-Signature" not in str(err.value)  # presigned URLs carry secrets: never in a message


def test_a_local_file_name_with_a_percent_is_decoded_once_as_label_studio_does(tmp_path: Path) -> None:
    (tmp_path / "a%41b.png").write_bytes(image_bytes(5, 4))  # Label Studio writes ?d=a%2541b.png for it
    (tmp_path / "aAb.png").write_bytes(image_bytes(7, 4))
    media = fetcher(local_files_document_root=tmp_path)
    assert media.load("/data/local-files/?d=a%2541b.png", task_id=1, ls=None).pixels.shape == (4, 5, 3)
