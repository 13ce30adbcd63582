"""Task image references -> upright RGB images, as Label Studio displays them.

Handles every form a task's image value takes: ``/data/upload/...`` and other Label Studio paths,
``/data/local-files/?d=...`` (read from disk when ``LOCAL_FILES_DOCUMENT_ROOT`` is set), ``http(s)://``,
cloud URIs (``s3://``, ``gs://``, ``azure-blob://``) through Label Studio's presign endpoint, and ``data:``
URIs. Every fetch is bounded (whole-transfer time, bytes, pixels); each hop's destination is decided once
(``backend.outbound``): credentials go only to Label Studio's exact origin (scheme, host, port), and other
destinations that resolve to private addresses are refused unless allowed by ``PRELABEL_MEDIA_ALLOWED_HOSTS``.
Images are turned by their EXIF orientation, because that is what annotators see, and decoded no larger than the
models need (memory stays flat whatever the images); decoded pixels in flight are bounded per process.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from backend import outbound
from backend.errors import CredentialsRefused, MediaError
from backend.ls_client import LabelStudioClient
from backend.settings import ServerSettings

__all__ = ["CLOUD_SCHEMES", "FetchedImage", "MediaFetcher", "PixelBudget", "ScaleRule", "decode_image"]

CLOUD_SCHEMES = ("s3://", "gs://", "gcs://", "azure-blob://", "azure-spi://")
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class _Limits:
    timeout: float
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class FetchedImage:
    """A task image as the models get it, and the size Label Studio displays it at.

    Attributes:
        pixels: ``(h, w, 3)`` uint8 RGB, upright (EXIF applied); smaller than ``size_wh`` when every model reading
            it resizes it further anyway (see ``MediaFetcher.load``).
        size_wh: (width, height) of the upright original: ``original_width``/``original_height`` of its regions.
    """

    pixels: np.ndarray
    size_wh: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Factors from ``pixels`` coordinates to original-image coordinates."""
        height, width = self.pixels.shape[:2]
        return self.size_wh[0] / width, self.size_wh[1] / height


# Scale a model needs for an image of (width, height): its preprocessing shrinks it by that factor anyway.
ScaleRule = Callable[[int, int], float]


class PixelBudget:
    """Decoded pixels in flight across the process: a decode waits while others hold the budget.

    One image larger than the whole budget still decodes, alone, so nothing waits forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the duration of the block."""
        with self._cond:
            self._cond.wait_for(lambda: self.held == 0 or self.held + pixels <= self.limit)
            self.held += pixels
        try:
            yield
        finally:
            with self._cond:
                self.held -= pixels
                self._cond.notify_all()


class MediaFetcher:
    """Fetches and decodes task images within the server's limits.

    Args:
        settings: Server settings (limits, local-files root, allowed private hosts).
        session: Outbound HTTP session (``backend.outbound.make_session``: whole-transfer deadlines need its
            connections); by default a new one sized for ``PRELABEL_MEDIA_WORKERS``.
    """

    def __init__(self, settings: ServerSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or outbound.make_session(settings.media_workers)
        self.limits = _Limits(settings.media_timeout, settings.media_max_bytes, settings.media_max_pixels)
        self.budget = PixelBudget(settings.decode_budget_pixels)

    def load(
        self, value: object, *, task_id: int | None, ls: LabelStudioClient | None, scale: ScaleRule | None = None
    ) -> FetchedImage:
        """Return the image a task value refers to.

        Args:
            value: The task's image reference.
            task_id: The task's id (cloud URIs are presigned per task).
            ls: The project's Label Studio, for its paths and credentials.
            scale: The largest factor any model reading the image will shrink it by; the image is decoded at that
                size or up to twice it (JPEG DCT scaling, then an integer box reduction), never smaller.

        Raises:
            MediaError: The reference is unusable, the fetch failed or exceeded a limit, or the bytes are not an
                image. The message says which and how to fix it.
        """
        return decode_image(self.read(value, task_id=task_id, ls=ls), self.limits.max_pixels, scale, self.budget)

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
            return self._get(ls.url(f"/tasks/{task_id}/presign/?fileuri={encoded}"), ls, cloud_uri=value)
        if value.startswith("/"):
            if ls is None:
                raise MediaError(
                    f"{value} is a Label Studio path but no Label Studio URL is known: set LABEL_STUDIO_URL"
                )
            return self._get(ls.url(value), ls)
        if value.lower().startswith(("http://", "https://")):
            return self._get(value, ls)
        raise MediaError(f"unsupported image reference {value[:100]!r}: expected http(s)://, /data/..., s3:// or data:")

    def _local_file(self, value: str) -> bytes | None:
        """Read ``/data/local-files/?d=...`` from disk when a document root is configured."""
        root = self.settings.local_files_document_root
        parts = urlsplit(value)
        if root is None or not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        relative = parse_qs(parts.query).get("d", [""])[0]  # parse_qs decodes once, as Label Studio does
        path = (root / relative).resolve()
        if not relative or not path.is_relative_to(root):
            raise MediaError(f"local file {relative!r} is outside LOCAL_FILES_DOCUMENT_ROOT")
        return _read_file(path, self.limits.max_bytes)

    def _get(self, url: str, ls: LabelStudioClient | None, cloud_uri: str | None = None) -> bytes:
        """GET with manual redirects; each hop's destination is decided once, then checked or credentialed.

        Credentials go only to a hop whose destination is Label Studio's own origin (scheme, host and port).
        ``cloud_uri`` names the ``s3://``-style URI Label Studio presigns at ``url``, for the error messages: with
        "Use pre-signed URLs" on, Label Studio redirects to the bucket and prelabel downloads from it; off, Label
        Studio answers with the image itself.
        """
        with outbound.deadline(self.limits.timeout) as clock:
            for _ in range(_MAX_REDIRECTS + 1):
                prepared = outbound.prepare(self.session, url)
                target = outbound.destination(self.session, prepared)
                ours = ls is not None and target == ls.origin
                if ours and not ls.media(prepared.url or ""):  # type: ignore[union-attr]
                    raise MediaError(
                        f"{_short(url)} is on Label Studio but not one of its media paths (/data/...): refused, "
                        "so a task cannot make prelabel read Label Studio's API with its token"
                    )
                if not ours:
                    self._check_public(target, url, cloud_uri)
                response = self._request(prepared, ls if ours else None, clock)
                if response.is_redirect:
                    url = urljoin(url, response.headers["Location"])
                    response.close()
                    continue
                with response:
                    if response.status_code in (401, 403) and ours:
                        raise CredentialsRefused(_status_message(response, url, ours, cloud_uri))
                    if response.status_code != 200:
                        raise MediaError(_status_message(response, url, ours, cloud_uri))
                    return _read_capped(response, self.limits.max_bytes, clock, url)
        raise MediaError(f"too many redirects fetching {_short(url)}")

    def _request(
        self, prepared: requests.PreparedRequest, ls: LabelStudioClient | None, clock: outbound.Deadline
    ) -> requests.Response:
        try:
            if ls is not None:
                prepared.headers.update(ls.headers())
            response = self._send(prepared, clock)
            if response.status_code == 401 and ls is not None and ls.token:
                response.close()
                prepared.headers.update(ls.headers(refresh=True))
                response = self._send(prepared, clock)
            return response
        except PermissionError as exc:
            raise MediaError(str(exc)) from None
        except requests.RequestException as exc:
            if clock.expired:
                raise MediaError(f"{_short(prepared.url or '')} took longer than PRELABEL_MEDIA_TIMEOUT") from None
            raise MediaError(f"could not fetch {_short(prepared.url or '')}: {type(exc).__name__}: {exc}") from None

    def _send(self, prepared: requests.PreparedRequest, clock: outbound.Deadline) -> requests.Response:
        remaining = clock.remaining()
        return self.session.send(
            prepared, stream=True, allow_redirects=False, timeout=(min(remaining, 10.0), remaining)
        )

    def _check_public(self, target: outbound.Origin, url: str, cloud_uri: str | None = None) -> None:
        """Refuse destinations that resolve to a loopback, private, link-local or reserved address."""
        allowed = self.settings.media_allowed_hosts
        if target.host in allowed or f"{target.host}:{target.port}" in allowed:
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(target.host, target.port)}
        except socket.gaierror as exc:
            raise MediaError(f"cannot resolve {target.host}: {exc}") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                message = (
                    f"refusing to fetch {_short(url)}: {target.host} resolves to the non-public address {ip}; "
                    f"if this is intended, add {target.host} (or {target.host}:{target.port}) to "
                    f"PRELABEL_MEDIA_ALLOWED_HOSTS"
                )
                if cloud_uri:
                    message += (
                        f". It is the pre-signed URL Label Studio gave for {cloud_uri} (the storage has 'Use "
                        "pre-signed URLs' on, so prelabel downloads from the bucket's endpoint itself): allow that "
                        "endpoint, or turn pre-signed URLs off in the storage so images come through Label Studio"
                    )
                raise MediaError(message)


def decode_image(
    data: bytes, max_pixels: int, scale: ScaleRule | None = None, budget: PixelBudget | None = None
) -> FetchedImage:
    """Decode image bytes to an upright RGB image, refusing decompression bombs.

    Args:
        data: Encoded image.
        max_pixels: Largest width × height accepted (checked from the header, before decoding).
        scale: See ``MediaFetcher.load``; ``None`` keeps full resolution.
        budget: Bounds the decoded pixels in flight across threads.
    """
    try:
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    f"image is {width}x{height} = {width * height} pixels, over PRELABEL_MEDIA_MAX_PIXELS={max_pixels}"
                )
            # Only JPEG can decode at a reduced size, and only its EXIF is read without decoding the image (a PNG's
            # may follow the pixels): anything else holds the budget for its full size from here on.
            reduced = image.format == "JPEG"
            with nullcontext() if reduced or budget is None else budget.hold(width * height):
                orientation = image.getexif().get(_ORIENTATION, 1)
                size_wh = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
                factor = min(1.0, scale(*size_wh)) if scale else 1.0
                wanted = (max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor)))
                if factor < 1.0 and reduced:
                    image.draft("RGB", wanted)  # decode at 1/2, 1/4 or 1/8 scale, still >= wanted
                with budget.hold(image.size[0] * image.size[1]) if reduced and budget else nullcontext():
                    return _decoded(image, orientation, wanted, size_wh)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise MediaError(f"not a readable image ({len(data)} bytes): {exc}") from None


def _decoded(image: Image.Image, orientation: int, wanted: tuple[int, int], size_wh: tuple[int, int]) -> FetchedImage:
    """Decode, turn upright (copying only when it must), reduce by a whole factor, RGB."""
    upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    if upright.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the high byte, as browsers do
        high = (np.asarray(upright, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        upright = Image.fromarray(high, "L")
    reduce = min(image.size[0] // wanted[0], image.size[1] // wanted[1])
    if reduce >= 2:
        upright = upright.reduce(reduce)
    return FetchedImage(np.array(upright if upright.mode == "RGB" else upright.convert("RGB")), size_wh)


def _read_capped(response: requests.Response, max_bytes: int, clock: outbound.Deadline, url: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_short(url)} is {declared} bytes, over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    buffer = bytearray()
    try:
        for chunk in response.iter_content(_CHUNK):
            buffer += chunk
            if len(buffer) > max_bytes:
                raise MediaError(f"{_short(url)} is over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    except (requests.RequestException, OSError, ValueError) as exc:
        if not clock.expired:
            raise MediaError(f"could not read {_short(url)}: {type(exc).__name__}: {exc}") from None
    if clock.expired:  # the socket was shut down: what arrived is a truncated body
        raise MediaError(f"{_short(url)} took longer than PRELABEL_MEDIA_TIMEOUT")
    return bytes(buffer)


def _read_file(path: Path, max_bytes: int) -> bytes:
    """Read a regular file; FIFOs, devices and sockets are refused without blocking on them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise MediaError(f"local file not found: {path}") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # checked before fdopen, which refuses directories on its own terms
        os.close(fd)
        raise MediaError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as file:
        if info.st_size > max_bytes:
            raise MediaError(f"{path} is {info.st_size} bytes, over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise MediaError(f"{path} is over PRELABEL_MEDIA_MAX_BYTES={max_bytes}")
    return data


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


def _status_message(response: requests.Response, url: str, ours: bool, cloud_uri: str | None) -> str:
    status = response.status_code
    message = f"HTTP {status} fetching {_short(url)}"
    if status in (401, 403) and ours:
        message += (
            " — Label Studio refused the credentials: set LABEL_STUDIO_API_KEY to a valid legacy token or "
            "Personal Access Token (Account & Settings), and LABEL_STUDIO_URL to the URL prelabel can reach"
        )
    elif cloud_uri and ours:
        message += (
            f" — Label Studio could not give {cloud_uri}: {_reason(response)}. Check that a cloud storage of this "
            "project (Settings → Cloud Storage) covers this bucket and prefix, and that Label Studio can read it"
        )
    elif cloud_uri:
        message += f" — the bucket refused the pre-signed URL Label Studio gave for {cloud_uri}"
    return message


def _reason(response: requests.Response) -> str:
    """What Label Studio said, in a few words (its JSON ``detail``, else the start of its text)."""
    try:
        text = next(response.iter_content(2048), b"").decode("utf-8", "replace")
    except (requests.RequestException, OSError):
        return "no reason given"
    detail = text
    try:
        body = json.loads(text)
        detail = str(body.get("detail") or body.get("error") or text) if isinstance(body, dict) else text
    except ValueError:
        pass
    return " ".join(detail.split())[:200] or "no reason given"


def _short(url: str) -> str:
    """URL without its query string (presigned URLs carry secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url[:100]
