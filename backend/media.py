"""Task image references -> RGB arrays, as Label Studio displays them.

Handles every form a task's image value takes: ``/data/upload/...`` and other Label Studio paths,
``/data/local-files/?d=...`` (read from disk when ``LOCAL_FILES_DOCUMENT_ROOT`` is set), ``http(s)://``,
cloud URIs (``s3://``, ``gs://``, ``azure-blob://``) through Label Studio's presign endpoint, and ``data:``
URIs. Every fetch is bounded (time, bytes, pixels); URLs that resolve to private addresses are refused
unless they are Label Studio's own or allowed by ``PRELABEL_MEDIA_ALLOWED_HOSTS``; credentials only go to the
Label Studio host. Images are turned by their EXIF orientation, because that is what annotators see.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import MediaError
from backend.ls_client import LabelStudioClient
from backend.settings import ServerSettings

__all__ = ["CLOUD_SCHEMES", "MediaFetcher", "decode_image"]

CLOUD_SCHEMES = ("s3://", "gs://", "gcs://", "azure-blob://", "azure-spi://")
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16


@dataclass(frozen=True)
class _Limits:
    timeout: float
    max_bytes: int
    max_pixels: int


class MediaFetcher:
    """Fetches and decodes task images within the server's limits.

    Args:
        settings: Server settings (limits, local-files root, allowed private hosts).
        session: HTTP session shared by the process.
    """

    def __init__(self, settings: ServerSettings, session: requests.Session) -> None:
        self.settings = settings
        self.session = session
        self.limits = _Limits(settings.media_timeout, settings.media_max_bytes, settings.media_max_pixels)

    def load(self, value: object, *, task_id: int | None, ls: LabelStudioClient | None) -> np.ndarray:
        """Return the image a task value refers to, as an ``(H, W, 3)`` uint8 RGB array.

        Raises:
            MediaError: The reference is unusable, the fetch failed or exceeded a limit, or the bytes are not an
                image. The message says which and how to fix it.
        """
        return decode_image(self.read(value, task_id=task_id, ls=ls), self.limits.max_pixels)

    def read(self, value: object, *, task_id: int | None, ls: LabelStudioClient | None) -> bytes:
        """Return the raw bytes a task value refers to (see ``load``)."""
        try:
            return self._read(value, task_id=task_id, ls=ls)
        except (ValueError, UnicodeError, KeyError) as exc:  # malformed URLs, hosts, paths, token answers
            raise MediaError(f"unusable image reference {str(value)[:100]!r}: {type(exc).__name__}: {exc}") from None

    def _read(self, value: object, *, task_id: int | None, ls: LabelStudioClient | None) -> bytes:
        if not isinstance(value, str) or not value.strip():
            raise MediaError(f"image value must be a URL or path string, got {value!r}")
        value = value.strip()
        if value.startswith("data:"):
            return _data_uri(value, self.limits.max_bytes)
        local = self._local_file(value)
        if local is not None:
            return local
        if value.startswith(CLOUD_SCHEMES):
            if ls is None or task_id is None:
                raise MediaError(f"{value} needs Label Studio to presign it: set LABEL_STUDIO_URL")
            encoded = base64.urlsafe_b64encode(value.encode()).decode()
            return self._get(ls.url(f"/tasks/{task_id}/presign/?fileuri={encoded}"), ls)
        if value.startswith("/"):
            if ls is None:
                raise MediaError(
                    f"{value} is a Label Studio path but no Label Studio URL is known: set LABEL_STUDIO_URL"
                )
            return self._get(ls.url(value), ls)
        if value.startswith(("http://", "https://")):
            return self._get(value, ls)
        raise MediaError(f"unsupported image reference {value[:100]!r}: expected http(s)://, /data/..., s3:// or data:")

    def _local_file(self, value: str) -> bytes | None:
        """Read ``/data/local-files/?d=...`` from disk when a document root is configured."""
        root = self.settings.local_files_document_root
        parts = urlsplit(value)
        if root is None or not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        relative = unquote(parse_qs(parts.query).get("d", [""])[0])
        path = (root / relative).resolve()
        if not relative or not path.is_relative_to(root):
            raise MediaError(f"local file {relative!r} is outside LOCAL_FILES_DOCUMENT_ROOT")
        return _read_file(path, self.limits.max_bytes)

    def _get(self, url: str, ls: LabelStudioClient | None) -> bytes:
        """GET with manual redirects, so every hop is checked and only Label Studio hops get credentials."""
        deadline = time.monotonic() + self.limits.timeout
        for _ in range(_MAX_REDIRECTS + 1):
            ours = ls is not None and ls.owns(url)
            if not ours:
                self._check_public(url)
            response = self._request(url, ls if ours else None, deadline)
            if response.is_redirect:
                url = urljoin(url, response.headers["Location"])
                response.close()
                continue
            with response:
                if response.status_code != 200:
                    raise MediaError(_status_message(response.status_code, url, ours))
                return _read_capped(response, self.limits.max_bytes, deadline, url)
        raise MediaError(f"too many redirects fetching {_short(url)}")

    def _request(self, url: str, ls: LabelStudioClient | None, deadline: float) -> requests.Response:
        try:
            headers = ls.headers() if ls else {}
            response = self._send(url, headers, deadline)
            if response.status_code == 401 and ls is not None and ls.token:
                response.close()
                response = self._send(url, ls.headers(refresh=True), deadline)
            return response
        except PermissionError as exc:
            raise MediaError(str(exc)) from None
        except requests.RequestException as exc:
            raise MediaError(f"could not fetch {_short(url)}: {type(exc).__name__}: {exc}") from None

    def _send(self, url: str, headers: dict[str, str], deadline: float) -> requests.Response:
        remaining = max(deadline - time.monotonic(), 0.001)
        return self.session.get(
            url, headers=headers, stream=True, allow_redirects=False, timeout=(min(remaining, 10.0), remaining)
        )

    def _check_public(self, url: str) -> None:
        """Refuse URLs whose host resolves to a loopback, private, link-local or reserved address."""
        host = (urlsplit(url).hostname or "").lower()
        if not host:
            raise MediaError(f"URL has no host: {_short(url)}")
        if host in self.settings.media_allowed_hosts:
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except socket.gaierror as exc:
            raise MediaError(f"cannot resolve {host}: {exc}") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise MediaError(
                    f"refusing to fetch {_short(url)}: {host} resolves to the non-public address {ip}; "
                    f"if this is intended, add {host} to PRELABEL_MEDIA_ALLOWED_HOSTS"
                )


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode image bytes to an upright ``(H, W, 3)`` uint8 RGB array, refusing decompression bombs."""
    try:
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    f"image is {width}x{height} = {width * height} pixels, over PRELABEL_MEDIA_MAX_PIXELS={max_pixels}"
                )
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the high byte, as browsers show it
                high = (np.asarray(upright, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                upright = Image.fromarray(high, "L")
            return np.array(upright.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise MediaError(f"not a readable image ({len(data)} bytes): {exc}") from None


def _read_capped(response: requests.Response, max_bytes: int, deadline: float, url: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_short(url)} is {declared} bytes, over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    buffer = bytearray()
    # A server dripping bytes never trips the per-read timeout: close the response at the deadline instead.
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), response.close)
    watchdog.start()
    try:
        for chunk in response.iter_content(_CHUNK):
            buffer += chunk
            if len(buffer) > max_bytes:
                raise MediaError(f"{_short(url)} is over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    except (requests.RequestException, AttributeError, OSError, ValueError) as exc:
        if time.monotonic() < deadline:
            raise MediaError(f"could not read {_short(url)}: {type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
    if time.monotonic() >= deadline:
        raise MediaError(f"{_short(url)} took longer than PRELABEL_MEDIA_TIMEOUT")
    return bytes(buffer)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MediaError(f"{path} is {size} bytes, over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise MediaError(f"local file not found: {path}") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc}") from None


def _data_uri(value: str, max_bytes: int) -> bytes:
    header, _, payload = value.partition(",")
    if not header.endswith(";base64"):
        raise MediaError("data: URIs must be base64-encoded images")
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"data: URI is over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise MediaError(f"data: URI is not valid base64: {exc}") from None


def _status_message(status: int, url: str, ours: bool) -> str:
    message = f"HTTP {status} fetching {_short(url)}"
    if status in (401, 403) and ours:
        message += (
            " — Label Studio refused the credentials: set LABEL_STUDIO_API_KEY to a valid legacy token or "
            "Personal Access Token (Account & Settings), and LABEL_STUDIO_URL to the URL prelabel can reach"
        )
    return message


def _short(url: str) -> str:
    """URL without its query string (presigned URLs carry secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url[:100]
