"""A loopback stand-in for Roboflow's hosted inference API, answering in the JSON shapes Roboflow documents.

``POST /<project>/<version>?api_key=...&confidence=...`` with a base64 image body, as the serverless endpoint, the
legacy hosts and an inference server take it. Answers: object detection (``predictions`` with centre-format pixel
boxes), instance segmentation (the same plus ``points``), single-label classification (``predictions`` list, ``top``,
``confidence``), multi-label classification (``predictions`` object, ``predicted_classes``); errors as Roboflow
sends them: a refused key 403 ``{"message": "Forbidden"}`` (401 ``{"message": "Unauthorized"}`` without a key),
an unknown model 404 ``{"detail": "Not Found"}``, 429 with ``Retry-After``, 5xx. Each model's predictions are a
function of the uploaded image's size, so tests can state expected pixels by hand.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image

__all__ = ["FakeModel", "FakeRoboflow"]

Predictions = Callable[[int, int], Any]  # (uploaded width, height) -> the "predictions" value


@dataclass
class FakeModel:
    """One model: ``kind`` is ``detection``, ``segmentation``, ``classification`` or ``multilabel``."""

    kind: str
    predictions: Predictions


@dataclass
class Seen:
    """One request as the fake received it."""

    path: str
    query: dict[str, str]
    size_wh: tuple[int, int] | None


@dataclass
class FakeRoboflow:
    """The server; use as a context manager. ``failures`` are answered (in order) before any model answers.

    Attributes:
        key: The API key it accepts.
        models: ``"<project>/<version>"`` -> model.
        failures: ``(status, body, headers)`` answered first, one per request.
        delay: Seconds each model answer takes (to observe concurrency).
    """

    key: str
    models: dict[str, FakeModel] = field(default_factory=dict)
    failures: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeRoboflow:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        """Status, JSON body and headers for one request."""
        size = _size(body)
        with self._lock:
            self.seen.append(Seen(path, query, size))
            if self.failures:
                return self.failures.pop(0)
        if "api_key" not in query:
            return 401, {"message": "Unauthorized"}, {}
        if query["api_key"] != self.key:
            return 403, {"message": "Forbidden"}, {}
        model = self.models.get(path.strip("/"))
        if model is None:
            return 404, {"detail": "Not Found"}, {}
        if size is None:
            return 400, {"message": "Could not decode the image"}, {}
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return 200, _body(model, *size), {}


def _size(body: bytes) -> tuple[int, int] | None:
    try:
        return Image.open(io.BytesIO(base64.b64decode(body, validate=True))).size
    except Exception:
        return None


def _body(model: FakeModel, width: int, height: int) -> dict[str, Any]:
    predictions = model.predictions(width, height)
    common = {"time": 0.01, "image": {"width": width, "height": height}, "inference_id": "fake"}
    if model.kind == "classification":
        top = max(predictions, key=lambda p: p["confidence"])
        return {**common, "predictions": predictions, "top": top["class"], "confidence": top["confidence"],
                "prediction_type": "ClassificationModel"}  # fmt: skip
    if model.kind == "multilabel":
        chosen = [name for name, p in predictions.items() if p["confidence"] >= 0.5]
        return {**common, "predictions": predictions, "predicted_classes": chosen,
                "prediction_type": "ClassificationModel"}  # fmt: skip
    kind = "InstanceSegmentationModel" if model.kind == "segmentation" else "ObjectDetectionModel"
    return {**common, "predictions": predictions, "prediction_type": kind}


def _handler(fake: FakeRoboflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload, headers = fake.answer(url.path, query, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
