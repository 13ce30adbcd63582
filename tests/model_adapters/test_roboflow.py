from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from model_adapters.base import AdapterError, ModelSpec, Query, make_params
from model_adapters.classification import CALIBRATION
from model_adapters.roboflow import Roboflow, RoboflowParams
from model_adapters.roboflow.client import Endpoint, RoboflowError, infer
from tests.fake_roboflow import FakeModel, FakeRoboflow

KEY = "rf-test-key-5b8e1c"


def box(x: float, y: float, w: float, h: float, cls: str, confidence: float = 0.9, **extra: Any) -> dict:
    return {"x": x, "y": y, "width": w, "height": h, "confidence": confidence, "class": cls, "class_id": 0,
            "detection_id": "d", **extra}  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRoboflow]:
    with FakeRoboflow(KEY) as server:
        monkeypatch.setenv("ROBOFLOW_API_URL", server.url)
        monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
        yield server


def adapter(model_id: str = "hard-hats/3") -> Roboflow:
    loaded = Roboflow(ModelSpec("roboflow", model_id))
    loaded.load()
    return loaded


def query(prompts: tuple[str, ...], task: str = "detection", **knobs: Any) -> Query:
    values = {"api": "self_hosted", "api_key": KEY, "retries": 0, "task": task, **knobs}
    return Query(prompts, make_params(RoboflowParams, values, owner="roboflow"))


def test_an_odd_size_image_is_shrunk_for_upload_and_its_boxes_scale_back(fake: FakeRoboflow) -> None:
    # In the uploaded image's pixels: a 300 x 200 box centred at (750, 500), and a class no prompt names.
    fake.models["hard-hats/3"] = FakeModel(
        "detection", lambda w, h: [box(750, 500, 300, 200, "Hard_Hat"), box(10, 10, 4, 4, "person", 0.8)]
    )
    image = np.zeros((1999, 3001, 3), dtype=np.uint8)
    (found,) = adapter()([image], query(("head", "hard hat"), score_threshold=0.25))
    # 3001 x 1999 with the longer side capped at 1500: 1500 x round(1999 * 1500 / 3001) = 1500 x 999.
    assert fake.seen[0].size_wh == (1500, 999)
    assert fake.seen[0].query == {"api_key": KEY, "confidence": "0.25", "overlap": "0.3"}
    # Back to 3001 x 1999: x * 3001 / 1500, y * 1999 / 999; corners 600, 400, 900, 600 before scaling.
    np.testing.assert_allclose(found.xyxy, [[1200.4, 800.4004, 1800.6, 1200.6006]], rtol=1e-6)
    assert found.class_id.tolist() == [1]  # "Hard_Hat" matches "hard hat" once normalised; "person" is dropped
    np.testing.assert_allclose(found.confidence, [0.9])


def test_an_image_within_the_limit_is_sent_as_it_is(fake: FakeRoboflow) -> None:
    fake.models["hard-hats/3"] = FakeModel("detection", lambda w, h: [box(20, 12, 10, 8, "helmet")])
    (found,) = adapter()([np.zeros((48, 64, 3), dtype=np.uint8)], query(("helmet",)))
    assert fake.seen[0].size_wh == (64, 48)
    np.testing.assert_allclose(found.xyxy, [[15, 8, 25, 16]])


def test_instance_segmentation_points_become_masks(fake: FakeRoboflow) -> None:
    square = [{"x": 10, "y": 10}, {"x": 30, "y": 10}, {"x": 30, "y": 20}, {"x": 10, "y": 20}]
    fake.models["hard-hats/3"] = FakeModel("segmentation", lambda w, h: [box(20, 15, 20, 10, "helmet", points=square)])
    (found,) = adapter()([np.zeros((48, 64, 3), dtype=np.uint8)], query(("helmet",), "segmentation"))
    assert found.mask.shape == (1, 48, 64)
    # The outline's pixels, edges included: columns 10..30 and rows 10..20.
    expected = np.zeros((48, 64), dtype=bool)
    expected[10:21, 10:31] = True
    np.testing.assert_array_equal(found.mask[0], expected)
    np.testing.assert_allclose(found.xyxy, [[10, 10, 30, 20]])


def test_a_detection_model_cannot_fill_polygons_or_choices(fake: FakeRoboflow) -> None:
    fake.models["hard-hats/3"] = FakeModel("detection", lambda w, h: [box(20, 15, 20, 10, "helmet")])
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    with pytest.raises(AdapterError, match="boxes without outlines"):
        adapter()([image], query(("helmet",), "segmentation"))
    with pytest.raises(AdapterError, match="answers boxes, not classes"):
        adapter()([image], query(("helmet",), "classification"))


def test_single_label_classification_gives_one_softmax_row_per_prompt(fake: FakeRoboflow) -> None:
    classes = [{"class": "cat", "class_id": 0, "confidence": 0.7}, {"class": "dog", "class_id": 1, "confidence": 0.2},
               {"class": "bird", "class_id": 2, "confidence": 0.1}]  # fmt: skip
    fake.models["pets/1"] = FakeModel("classification", lambda w, h: classes)
    (found,) = adapter("pets/1")([np.zeros((48, 64, 3), dtype=np.uint8)], query(("Dog", "cat"), "classification"))
    assert fake.seen[0].query == {"api_key": KEY, "confidence": "0.0"}  # every score back; no overlap
    np.testing.assert_allclose(found.confidence, [0.2, 0.7])
    assert found.metadata[CALIBRATION] == "softmax"
    np.testing.assert_allclose(found.xyxy, [[0, 0, 64, 48], [0, 0, 64, 48]])


def test_multi_label_classification_gives_independent_scores(fake: FakeRoboflow) -> None:
    classes = {"cat": {"confidence": 0.8, "class_id": 0}, "dog": {"confidence": 0.6, "class_id": 1}}
    fake.models["pets/2"] = FakeModel("multilabel", lambda w, h: classes)
    (found,) = adapter("pets/2")(
        [np.zeros((48, 64, 3), dtype=np.uint8)], query(("cat", "dog", "fish"), "classification")
    )
    np.testing.assert_allclose(found.confidence, [0.8, 0.6, 0.0])
    assert found.metadata[CALIBRATION] == "sigmoid"


def test_a_classifier_cannot_draw_boxes(fake: FakeRoboflow) -> None:
    fake.models["pets/1"] = FakeModel("classification", lambda w, h: [{"class": "cat", "confidence": 0.7}])
    with pytest.raises(AdapterError, match="is a classifier"):
        adapter("pets/1")([np.zeros((48, 64, 3), dtype=np.uint8)], query(("cat",)))


@pytest.mark.parametrize(
    ("key", "model_id", "message"),
    [
        ("wrong-key-77", "hard-hats/3", "refused the API key for model hard-hats/3 (HTTP 403: Forbidden)"),
        (KEY, "hard-hats/9", "has no model hard-hats/9 (HTTP 404: Not Found): check model_id"),
    ],
)
def test_refusals_say_what_to_fix_without_the_key(fake: FakeRoboflow, key: str, model_id: str, message: str) -> None:
    fake.models["hard-hats/3"] = FakeModel("detection", lambda w, h: [])
    with pytest.raises(RoboflowError) as caught:
        adapter(model_id)([np.zeros((8, 8, 3), dtype=np.uint8)], query(("helmet",), api_key=key))
    assert message in str(caught.value)
    assert key not in str(caught.value) and len(fake.seen) == 1  # refusals are not retried


def test_429_and_5xx_are_retried_honouring_retry_after(fake: FakeRoboflow) -> None:
    fake.models["m/1"] = FakeModel("detection", lambda w, h: [box(4, 4, 2, 2, "a")])
    fake.failures = [(429, {"message": "Rate limit exceeded"}, {"Retry-After": "2"}), (503, {"message": "busy"}, {})]
    pauses: list[float] = []
    answer = infer(requests.Session(), Endpoint(f"{fake.url}/m/1", percent=False), _b64(), api_key=KEY,
                   model_id="m/1", query={}, timeout=5, retries=3, sleep=pauses.append)  # fmt: skip
    assert pauses == [2.0, 1.0]  # Retry-After, then the second try's backoff (0.5 s doubled)
    assert answer["predictions"][0]["class"] == "a" and len(fake.seen) == 3


def test_retries_are_bounded_and_the_last_failure_is_named(fake: FakeRoboflow) -> None:
    fake.failures = [(500, {"message": f"boom {KEY}"}, {})] * 4 + [(200, {"predictions": []}, {})]
    pauses: list[float] = []
    with pytest.raises(RoboflowError) as caught:
        infer(requests.Session(), Endpoint(f"{fake.url}/m/1", percent=False), _b64(), api_key=KEY, model_id="m/1",
              query={}, timeout=5, retries=3, sleep=pauses.append)  # fmt: skip
    assert str(caught.value) == "Roboflow did not answer for model m/1 after 4 tries: HTTP 500: boom [REDACTED]"
    assert pauses == [0.5, 1.0, 2.0] and len(fake.seen) == 4


def test_a_call_times_out(fake: FakeRoboflow) -> None:
    fake.models["m/1"] = FakeModel("detection", lambda w, h: [])
    fake.delay = 1.5
    with pytest.raises(RoboflowError, match=r"after 1 try: no answer within 1 s"):
        adapter("m/1")([np.zeros((8, 8, 3), dtype=np.uint8)], query(("a",), timeout=1))


def test_concurrency_is_bounded(fake: FakeRoboflow) -> None:
    fake.models["m/1"] = FakeModel("detection", lambda w, h: [])
    fake.delay = 0.2
    found = adapter("m/1")([np.zeros((8, 8, 3), dtype=np.uint8)] * 6, query(("a",), concurrency=2))
    assert len(found) == 6 and len(fake.seen) == 6 and fake.most_in_flight == 2


def test_legacy_hosts_take_thresholds_in_percent(fake: FakeRoboflow) -> None:
    fake.models["m/1"] = FakeModel("detection", lambda w, h: [])
    infer(requests.Session(), Endpoint(f"{fake.url}/m/1", percent=True), _b64(), api_key=KEY, model_id="m/1",
          query={"confidence": 0.4, "overlap": 0.3}, timeout=5, retries=0)  # fmt: skip
    assert fake.seen[0].query == {"api_key": KEY, "confidence": "40.0", "overlap": "30.0"}


@pytest.mark.parametrize(
    ("api", "task", "model_id", "url", "percent"),
    [
        ("serverless", "segmentation", "hard-hats/3", "https://serverless.roboflow.com/hard-hats/3", False),
        ("legacy", "detection", "my-team/hard-hats/3", "https://detect.roboflow.com/hard-hats/3", True),
        ("legacy", "segmentation", "hard-hats/3", "https://outline.roboflow.com/hard-hats/3", True),
        ("legacy", "classification", "pets/12", "https://classify.roboflow.com/pets/12", True),
        ("self_hosted", "detection", "hard-hats/3", "http://inference:9001/hard-hats/3", False),
    ],
)
def test_endpoints(api: str, task: str, model_id: str, url: str, percent: bool) -> None:
    assert Endpoint.of(api, task, model_id, "http://inference:9001/") == Endpoint(url, percent)


@pytest.mark.parametrize("model_id", ["hard-hats", "hard-hats/v3", "../admin/3", "a/b/c/3", ""])
def test_malformed_model_ids_are_refused(model_id: str) -> None:
    with pytest.raises(ValueError, match="<project>/<version>"):
        Endpoint.of("serverless", "detection", model_id, None)


def _b64() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()
