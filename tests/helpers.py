"""Factories shared by the tests: images, tasks, detections, label configs, a local HTTP server."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import numpy as np
import supervision as sv
from flask import Flask
from PIL import Image
from werkzeug.serving import make_server

RECT_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Cat" predicted_values="a cat,cat"/>
    <Label value="Remote"/>
  </RectangleLabels>
</View>"""


def image_array(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """A random RGB image (H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def image_bytes(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG", **save: Any) -> bytes:
    """A random image encoded as ``fmt``; extra keywords go to ``PIL.Image.save`` (e.g. ``exif=``)."""
    buffer = io.BytesIO()
    Image.fromarray(image_array(width, height, seed)).save(buffer, fmt, **save)
    return buffer.getvalue()


def data_uri(width: int = 64, height: int = 48, seed: int = 0) -> str:
    """A PNG image as a ``data:`` URI, usable as a task's image value without any server."""
    return "data:image/png;base64," + base64.b64encode(image_bytes(width, height, seed)).decode()


def make_task(task_id: int, image: str, key: str = "image") -> dict[str, Any]:
    """A task as Label Studio sends it to /predict (the fields prelabel reads, plus typical extras)."""
    return {"id": task_id, "data": {key: image}, "meta": {}, "annotations": [], "predictions": [], "drafts": []}


def make_detections(xyxy: list[list[float]], confidence: list[float], class_id: list[int]) -> sv.Detections:
    """Detections from plain lists."""
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, dtype=np.float32),
        class_id=np.asarray(class_id, dtype=int),
    )


class LocalServer:
    """A Flask app served on 127.0.0.1 in a thread; routes are added to ``app`` by the test."""

    def __init__(self) -> None:
        self.app = Flask("local-test-server")
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)
