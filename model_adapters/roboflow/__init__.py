"""Roboflow models (Universe or private) through Roboflow's hosted inference HTTP API: boxes, outlines or classes.

load -> preprocess -> forward -> postprocess, with no model library and no torch: ``load`` opens an HTTP session,
``preprocess`` shrinks each image whose longer side exceeds ``max_side`` and encodes it as base64 JPEG, ``forward``
posts the images (at most ``concurrency`` at a time, see ``client``), and ``postprocess`` turns each JSON answer into
detections in the pixels of the image it was given (see ``answers``).

``model_id`` is ``"<project>/<version>"`` (a workspace prefix is accepted). The API key is the project's
``api_key`` setting, else the server's ``ROBOFLOW_API_KEY``; ``api`` picks the serverless endpoint (default), the
legacy task hosts, or an inference server the team runs (``self_hosted``, at the server's ``ROBOFLOW_API_URL``:
a URL only the server's operator sets, so a project cannot make prelabel post images elsewhere).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import requests
import supervision as sv
from PIL import Image

from model_adapters.base import SECRET, Adapter, Query, SettingsError, Task
from model_adapters.registry import register_adapter
from model_adapters.roboflow.answers import detections
from model_adapters.roboflow.client import Endpoint, infer, parse_model_id

__all__ = ["API_KEY_ENV", "API_URL_ENV", "Roboflow", "RoboflowParams"]

API_KEY_ENV = "ROBOFLOW_API_KEY"
API_URL_ENV = "ROBOFLOW_API_URL"
_JPEG_QUALITY = 90

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoboflowParams:
    """Per-project knobs.

    Attributes:
        score_threshold: Roboflow's ``confidence`` for boxes and outlines: predictions below it are not returned
            (0-1). Choices are thresholded by the server (the classification section's ``score_threshold``).
        overlap: Roboflow's ``overlap``: IoU above which it merges boxes of one class (0-1).
        api: ``"serverless"`` (serverless.roboflow.com), ``"legacy"`` (detect/outline/classify.roboflow.com) or
            ``"self_hosted"`` (the inference server at the server's ``ROBOFLOW_API_URL``).
        api_key: The project's Roboflow API key; ``None`` uses the server's ``ROBOFLOW_API_KEY``.
        max_side: Images whose longer side exceeds this many pixels are shrunk before upload (answers are scaled
            back), which keeps requests within the hosted API's upload limit.
        concurrency: Images of one batch in flight at once.
        timeout: Seconds per HTTP call.
        retries: Further tries after a 429, a 5xx, a timeout or a dropped connection (with backoff).
        task: Set by the server from the control: what the answer must be.
    """

    score_threshold: float = 0.4
    overlap: float = 0.3
    api: Literal["serverless", "legacy", "self_hosted"] = "serverless"
    api_key: str | None = field(default=None, repr=False, metadata={SECRET: True})
    max_side: int = 1500
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 3
    task: Literal["detection", "segmentation", "classification"] = "detection"

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("score_threshold", self.score_threshold, 0.0, 1.0),
            ("overlap", self.overlap, 0.0, 1.0),
            ("max_side", self.max_side, 32, 8192),
            ("concurrency", self.concurrency, 1, Roboflow.max_batch_size),
            ("timeout", self.timeout, 1.0, 120.0),
            ("retries", self.retries, 0, 5),
        ):
            if not low <= value <= high:
                raise SettingsError(f"roboflow.{name} must be between {low} and {high}, got {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise SettingsError("roboflow.api_key must be a Roboflow API key, got an empty string")


@dataclass(frozen=True)
class _Upload:
    image_b64: str
    size_wh: tuple[int, int]


@register_adapter
class Roboflow(Adapter[RoboflowParams]):
    """A Roboflow model behind its hosted inference API (detection, instance segmentation or classification)."""

    name = "roboflow"
    task = Task.DETECTION
    other_tasks = frozenset({Task.SEGMENTATION, Task.CLASSIFICATION})
    variants: Mapping[str, str] = {"hosted": ""}  # no default model: every project names its own
    default_variant = "hosted"
    Params = RoboflowParams
    max_batch_size = 8

    @classmethod
    def check_settings(cls, model_id: str, params: RoboflowParams) -> None:
        """The model id's form, a key to send, and a server URL for ``self_hosted``: what ``/setup`` can check."""
        try:
            Endpoint.of(params.api, params.task, model_id, os.environ.get(API_URL_ENV))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if not (params.api_key or os.environ.get(API_KEY_ENV)):
            raise SettingsError(
                f"roboflow needs an API key: set api_key in the project's extra_params or {API_KEY_ENV} on the server"
            )

    def load(self) -> None:
        """Check the model id and open the HTTP session (nothing to download)."""
        parse_model_id(self.spec.model_id)
        self.session = requests.Session()
        self.session.trust_env = False  # as every outbound request of prelabel: no proxies or .netrc from the env
        self._unmatched: set[str] = set()

    def preprocess(self, images: Sequence[np.ndarray], query: Query[RoboflowParams]) -> dict[str, Any]:
        """Each image, shrunk to ``max_side`` when larger, as base64 JPEG with the size it was sent at."""
        return {"uploads": [_encode(image, query.params.max_side) for image in images], "params": query.params}

    def forward(self, batch: Mapping[str, Any]) -> list[tuple[dict[str, Any], tuple[int, int]]]:
        """The HTTP calls (no device, no autograd: nothing of the base class's torch handling applies)."""
        return self._forward(batch)

    def _forward(self, batch: Mapping[str, Any]) -> list[tuple[dict[str, Any], tuple[int, int]]]:
        """Each image's JSON answer, with the size it was uploaded at."""
        params: RoboflowParams = batch["params"]
        endpoint = Endpoint.of(params.api, params.task, self.spec.model_id, os.environ.get(API_URL_ENV))
        key = params.api_key or os.environ.get(API_KEY_ENV, "")
        # A classifier's scores all come back (confidence 0): the server picks choices by its own thresholds.
        query = {"confidence": 0.0} if params.task == "classification" else {
            "confidence": params.score_threshold, "overlap": params.overlap}  # fmt: skip

        def call(upload: _Upload) -> tuple[dict[str, Any], tuple[int, int]]:
            answer = infer(
                self.session, endpoint, upload.image_b64, api_key=key, model_id=self.spec.model_id, query=query,
                timeout=params.timeout, retries=params.retries,
            )  # fmt: skip
            return answer, upload.size_wh

        uploads = batch["uploads"]
        with ThreadPoolExecutor(min(params.concurrency, len(uploads)), thread_name_prefix="roboflow") as pool:
            return list(pool.map(call, uploads))

    def postprocess(
        self,
        raw: list[tuple[dict[str, Any], tuple[int, int]]],
        images: Sequence[np.ndarray],
        query: Query[RoboflowParams],
    ) -> list[sv.Detections]:
        """Each answer as detections on its image; class names no prompt matches are dropped (and logged once)."""
        prompts = [str(p) for p in query.prompts]
        out = []
        for (answer, upload_wh), image in zip(raw, images, strict=True):
            found, unmatched = detections(
                answer, task=query.params.task, prompts=prompts, image=image, upload_wh=upload_wh
            )
            for name in sorted(unmatched - self._unmatched):
                log.info(
                    "roboflow %s: class %r matches no label of the project; its predictions are dropped (name it in "
                    "a label's predicted_values to keep them)",
                    self.spec.model_id,
                    name,
                )
            self._unmatched |= unmatched
            out.append(found)
        return out


def _upload_wh(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` shrunk so the longer side is ``max_side`` (unchanged when it already fits)."""
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _encode(image: np.ndarray, max_side: int) -> _Upload:
    size = _upload_wh(image.shape[1], image.shape[0], max_side)
    picture = Image.fromarray(image)
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return _Upload(base64.b64encode(buffer.getvalue()).decode("ascii"), size)
