"""The runner within limits: images decoded no larger than the models need, a time budget, a client that hangs up."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
from flask.testing import FlaskClient
from PIL import Image

from backend.app import create_app
from backend.media import PixelBudget, decode_image
from backend.settings import ServerSettings
from model_adapters.base import Adapter, Query, ResizeRule, Task
from model_adapters.registry import register_adapter
from tests.helpers import RECT_CONFIG, data_uri, image_array, make_task


@dataclass(frozen=True)
class _Params:
    score_threshold: float = 0.0


@register_adapter
class ShrinkingDetector(Adapter[_Params]):
    """Resizes every image to a 100-px shortest side (like CLIP); one box over 20%..60% of the image it gets."""

    name = "test_shrinking_detector"
    task = Task.DETECTION
    variants = {"default": "test/shrinking"}
    default_variant = "default"
    Params = _Params
    seen: list[tuple[int, ...]] = []
    delay_s = 0.0

    def load(self) -> None:
        self.resize_rule = ResizeRule(shortest=100)

    def preprocess(self, images: Sequence[np.ndarray], query: Query) -> dict[str, Any]:
        return {}

    def _forward(self, batch: Any) -> Any:
        return None

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        type(self).seen.extend(image.shape for image in images)
        time.sleep(self.delay_s * len(images))
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        boxes = [[0.2 * i.shape[1], 0.2 * i.shape[0], 0.6 * i.shape[1], 0.6 * i.shape[0]] for i in images]
        return [sv.Detections(np.array([b], dtype=np.float32), confidence=np.array([0.9]), class_id=np.array([0]))
                for b in boxes]  # fmt: skip


def client_for(tmp_path: Path, **overrides: Any) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, **overrides)).test_client()


def setup(client: FlaskClient) -> None:
    body = {"project": "5.1", "schema": RECT_CONFIG, "extra_params": {"detection": {"model": ShrinkingDetector.name}}}
    assert client.post("/setup", json=body).status_code == 200


def encoded(width: int, height: int, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_array(width, height, seed=3)).save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_images_decode_no_smaller_than_the_model_needs_and_at_most_twice_that(fmt: str) -> None:
    data = encoded(3000, 2000, fmt)
    image = decode_image(data, max_pixels=10**8, scale=ResizeRule(shortest=100).scale)
    height, width = image.pixels.shape[:2]
    assert image.size_wh == (3000, 2000)
    assert 100 <= height < 200 and 150 <= width < 300  # the model resizes the short side to 100 itself
    if fmt == "PNG":  # a box reduction of the full image, as PIL computes it
        reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").reduce(20))
        assert np.array_equal(image.pixels, reference)


def test_a_rotated_jpeg_keeps_its_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encoded(1600, 1200, "JPEG", exif=exif), max_pixels=10**8, scale=ResizeRule(shortest=100).scale)
    assert image.size_wh == (1200, 1600)
    assert image.pixels.shape[0] > image.pixels.shape[1] >= 100


def test_without_a_rule_the_image_keeps_full_resolution() -> None:
    assert decode_image(encoded(640, 480, "PNG"), max_pixels=10**8).pixels.shape == (480, 640, 3)


def test_the_pixel_budget_bounds_decodes_in_flight_but_never_blocks_a_lone_large_image() -> None:
    budget = PixelBudget(limit=100)
    held: list[int] = []

    def work(pixels: int) -> None:
        with budget.hold(pixels):
            held.append(budget.held)
            time.sleep(0.02)

    threads = [threading.Thread(target=work, args=(p,)) for p in [60, 60, 30, 30, 250, 10]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(held) == 6 and max(held) == 250  # the oversized one ran, alone
    assert all(h <= 100 for h in held if h != 250)


def test_regions_of_a_downscaled_image_are_in_the_original_frame(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    setup(client)
    ShrinkingDetector.seen.clear()
    big = "data:image/png;base64," + __import__("base64").b64encode(encoded(1200, 800, "PNG")).decode()
    (entry,) = client.post("/predict", json={"tasks": [make_task(1, big)], "project": "5.1"}).json["results"]
    (shape,) = ShrinkingDetector.seen
    assert shape[0] < 800 and 100 <= min(shape[:2]) < 200  # the model got a reduced image...
    (region,) = [r for r in entry["result"] if r["value"]["rectanglelabels"] == ["Cat"]]
    assert (region["original_width"], region["original_height"]) == (1200, 800)  # ...the regions the original
    value = region["value"]
    assert [value["x"], value["y"], value["width"], value["height"]] == pytest.approx([20, 20, 40, 40], abs=0.5)


def test_tasks_past_the_time_budget_get_no_prediction_and_are_reported(tmp_path: Path) -> None:
    client = client_for(tmp_path, predict_budget=1.0)
    setup(client)
    ShrinkingDetector.delay_s = 0.15
    try:
        tasks = [make_task(i, data_uri(32, 32, seed=i)) for i in range(40)]
        started = time.monotonic()
        results = client.post("/predict", json={"tasks": tasks, "project": "5.1"}).json["results"]
        elapsed = time.monotonic() - started
    finally:
        ShrinkingDetector.delay_s = 0.0
    done = [r for r in results if r != []]
    assert len(results) == 40 and 4 <= len(done) < 40
    assert results[: len(done)] == done  # tasks are predicted in order; the rest wait for the next retrieve
    assert elapsed < 1.0 + 0.15 * 8 + 0.5  # at most the chunk in flight past the budget
    assert "time budget (PRELABEL_PREDICT_BUDGET=1 s) ran out" in client.get("/").text


def test_a_client_that_hung_up_stops_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for(tmp_path)
    setup(client)

    def gone(environ: dict) -> Any:
        return lambda: len(ShrinkingDetector.seen) > 0  # hangs up once the first batch has run

    monkeypatch.setattr("backend.app._client_gone", gone)
    ShrinkingDetector.seen.clear()
    tasks = [make_task(i, data_uri(32, 32, seed=i)) for i in range(40)]
    results = client.post("/predict", json={"tasks": tasks, "project": "5.1"}).json["results"]
    assert len(results) == 40 and 0 < len(ShrinkingDetector.seen) < 40
    assert sum(r != [] for r in results) == len(ShrinkingDetector.seen)
