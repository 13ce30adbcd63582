"""Helpers for learning tests: an in-process app, webhook payloads as Label Studio sends them, images by colour."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from backend.app import create_app
from backend.service import PrelabelService
from backend.settings import ServerSettings

PROJECT = "7.1700000000"
PROJECT_ID = 7


def coloured(rgb: tuple[int, int, int], seed: int, size: tuple[int, int] = (40, 32)) -> str:
    """A noisy image of one colour as a data URI (random-weight models still tell colours apart)."""
    noise = np.random.default_rng(seed).integers(-25, 25, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def annotation_event(
    annotation_id: int, task_id: int, image: str, result: list[dict[str, Any]], action: str = "ANNOTATION_CREATED",
    **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """A webhook body as Label Studio 1.23 sends it for one annotation."""
    annotation = {"id": annotation_id, "task": task_id, "result": result, "was_cancelled": False,
                  "ground_truth": False, "completed_by": 1, "updated_at": f"2026-01-01T00:00:{annotation_id:02d}Z",
                  **fields}  # fmt: skip
    return {"action": action, "project": {"id": PROJECT_ID}, "annotation": annotation,
            "task": {"id": task_id, "data": {"image": image}}}  # fmt: skip


def choice(control: str, label: str) -> dict[str, Any]:
    return {"from_name": control, "to_name": "image", "type": "choices", "value": {"choices": [label]}}


def rectangle(control: str, label: str, x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {"from_name": control, "to_name": "image", "type": "rectanglelabels", "original_width": 100,
            "original_height": 100, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                               "rectanglelabels": [label]}}  # fmt: skip


@pytest.fixture
def app_service(tmp_path: Path) -> Callable[..., tuple[FlaskClient, PrelabelService]]:
    """``make(**settings)`` -> a test client and its service; fits run only when a test calls ``run_fits``."""

    def make(**overrides: Any) -> tuple[FlaskClient, PrelabelService]:
        settings = ServerSettings(
            model_dir=tmp_path / "model_dir", preload_projects=0, fit_debounce=3600.0, **overrides
        )
        app = create_app(settings)
        return app.test_client(), app.extensions["prelabel"]

    return make


def run_fits(service: PrelabelService, count: int = 1, timeout: float = 60.0) -> None:
    """Run asked-for fits in this thread until ``count`` fits exist (the app's own loop waits an hour)."""
    deadline = time.monotonic() + timeout
    while len(service.learner.store.fits(PROJECT_ID)) < count:
        if not service.learner.run_due(debounce=0.0):
            time.sleep(0.05)
        assert time.monotonic() < deadline, f"no fit {count} after {timeout} s"
