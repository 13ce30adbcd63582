"""Generative grounding models end to end through ``/setup`` and ``/predict`` (tiny weights, forced answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from label_studio_sdk.label_interface import LabelInterface
from transformers import (
    AutoProcessor,
    Florence2ForConditionalGeneration,
    Kosmos2ForConditionalGeneration,
    LlavaForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
)

from backend.app import create_app
from backend.settings import ServerSettings
from tests.helpers import data_uri, make_task
from tests.model_adapters.forced import force
from tests.model_adapters.test_kosmos2 import frame_by_hand

RECT = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Dog"/></RectangleLabels></View>"""
BOXES_AND_CHOICES = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Dog"/></RectangleLabels>
<Choices name="kind" toName="image"><Choice value="Cat"/><Choice value="Dog"/></Choices></View>"""


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()


def post(client: FlaskClient, route: str, body: dict[str, Any]) -> Any:
    response = client.post(route, json=body)
    assert response.status_code == 200, response.json
    return response.json


def test_kosmos2_boxes_reach_label_studio_as_valid_rectangles(
    client: FlaskClient, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = str(tiny("kosmos2"))
    processor = AutoProcessor.from_pretrained(model_dir)
    answer = "<phrase> two cats</phrase><object><patch_index_0100><patch_index_0900></object> and<phrase> a bird"
    answer += "</phrase><object><patch_index_0001><patch_index_0002></object>"
    ids = [*processor.tokenizer(answer, add_special_tokens=False)["input_ids"], processor.tokenizer.eos_token_id]
    force(monkeypatch, Kosmos2ForConditionalGeneration, lambda: ids)
    extra = {"detection": {"model": "kosmos2", "model_id": model_dir, "max_new_tokens": 40}}
    version = post(client, "/setup", {"project": "3.1", "schema": RECT, "extra_params": extra})["model_version"]
    assert version.startswith("kosmos2-")
    body = {"tasks": [make_task(1, data_uri(70, 45))], "project": "3.1", "label_config": RECT}
    (entry,) = post(client, "/predict", body)["results"]
    assert LabelInterface(RECT).validate_prediction(entry)
    (region,) = entry["result"]  # "a bird" names no label: dropped
    assert region["value"]["rectanglelabels"] == ["Cat"] and 0 < region["score"] < 1

    _, entities = processor.post_process_generation(answer)
    (box,) = entities[0][2]
    x0, y0, x1, y1 = frame_by_hand(70, 45)
    left, top, right, bottom = np.asarray(box) * [x1 - x0, y1 - y0, x1 - x0, y1 - y0] + [x0, y0, x0, y0]
    value = region["value"]
    np.testing.assert_allclose(
        [value["x"], value["y"], value["width"], value["height"]],
        [left / 70 * 100, top / 45 * 100, (right - left) / 70 * 100, (bottom - top) / 45 * 100],
        atol=1e-3,
    )


def test_llava_boxes_and_choices_reach_label_studio(
    client: FlaskClient, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = str(tiny("llava"))
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    answer = "Cat: [0.25, 0.5, 0.75, 1.0]\nbird: [0, 0, 1, 1]"
    ids = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    force(monkeypatch, LlavaForConditionalGeneration, lambda: ids)
    section = {"model": "llava", "model_id": model_dir}
    extra = {"detection": {**section, "max_new_tokens": 40}, "classification": section}
    body = {"project": "3.2", "schema": BOXES_AND_CHOICES, "extra_params": extra}
    assert post(client, "/setup", body)["model_version"].startswith("llava-")
    body = {"tasks": [make_task(1, data_uri(70, 45))], "project": "3.2", "label_config": BOXES_AND_CHOICES}
    (entry,) = post(client, "/predict", body)["results"]
    assert LabelInterface(BOXES_AND_CHOICES).validate_prediction(entry)
    regions = {r["from_name"]: r for r in entry["result"]}
    assert set(regions) == {"boxes", "kind"}  # "bird" names no label: dropped
    box = regions["boxes"]
    assert box["value"]["rectanglelabels"] == ["Cat"] and 0 < box["score"] < 1
    # By hand: 70 x 45 sits 12 px down an (unscaled) 70 px square; [0.25, 0.5, 0.75, 1.0] of it is
    # x 17.5..52.5, y 35 - 12 = 23 .. 70 - 12 = 58, clipped to 45.
    value = box["value"]
    np.testing.assert_allclose(
        [value["x"], value["y"], value["width"], value["height"]],
        [25.0, 23 / 45 * 100, 50.0, 22 / 45 * 100],
        atol=1e-3,
    )
    choice = regions["kind"]
    assert choice["value"]["choices"] in (["Cat"], ["Dog"]) and 0.5 <= choice["score"] < 1


OUTLINES = """<View><Image name="image" value="$image"/>
<PolygonLabels name="outline" toName="image"><Label value="Cat"/><Label value="Dog"/></PolygonLabels></View>"""


def test_florence2_outlines_reach_label_studio_as_valid_polygons(
    client: FlaskClient, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = str(tiny("florence2"))
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    # A rectangle from bin 100 to bin 600 of each side: pixels 100.5 / 1000 ... 600.5 / 1000 of it.
    answer = "<loc_100><loc_100><loc_600><loc_100><loc_600><loc_600><loc_100><loc_600></s>"
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    force(monkeypatch, Florence2ForConditionalGeneration, lambda: ids)
    extra = {"segmentation": {"model": "florence2_seg", "model_id": model_dir, "max_new_tokens": 20}}
    version = post(client, "/setup", {"project": "3.3", "schema": OUTLINES, "extra_params": extra})["model_version"]
    assert version.startswith("florence2_seg-")
    body = {"tasks": [make_task(1, data_uri(100, 60))], "project": "3.3", "label_config": OUTLINES}
    (entry,) = post(client, "/predict", body)["results"]
    assert LabelInterface(OUTLINES).validate_prediction(entry)
    assert sorted(r["value"]["polygonlabels"][0] for r in entry["result"]) == ["Cat", "Dog"]
    for region in entry["result"]:
        points = np.asarray(region["value"]["points"])  # percent of 100 x 60
        xs, ys = points[:, 0], points[:, 1] * 60 / 100
        # The processor dequantizes to int pixels (10, 6) .. (60, 36); PIL fills the pixels whose centre is in.
        assert abs(xs.min() - 10) <= 1.5 and abs(xs.max() - 60) <= 1.5
        assert abs(ys.min() - 6) <= 1.5 and abs(ys.max() - 36) <= 1.5
        assert 0 < region["score"] < 1


def test_qwen2_5_vl_boxes_reach_label_studio_as_valid_rectangles(
    client: FlaskClient, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = str(tiny("qwen2_5_vl"))
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    answer = '[{"bbox_2d": [21, 14, 63, 42], "label": "Cat"}, {"bbox_2d": [0, 0, 9, 9], "label": "bird"}]<|im_end|>'
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    force(monkeypatch, Qwen2_5_VLForConditionalGeneration, lambda: ids)
    extra = {"detection": {"model": "qwen2_5_vl", "model_id": model_dir, "max_new_tokens": 80}}
    version = post(client, "/setup", {"project": "3.4", "schema": RECT, "extra_params": extra})["model_version"]
    assert version.startswith("qwen2_5_vl-")
    body = {"tasks": [make_task(1, data_uri(80, 48))], "project": "3.4", "label_config": RECT}
    (entry,) = post(client, "/predict", body)["results"]
    assert LabelInterface(RECT).validate_prediction(entry)
    (region,) = entry["result"]  # "bird" names no label: dropped
    assert region["value"]["rectanglelabels"] == ["Cat"] and 0 < region["score"] < 1
    # By hand: 80 x 48 is resized to 84 x 56, so the box is x 21..63 of 84, y 14..42 of 56, in percent.
    value = region["value"]
    np.testing.assert_allclose(
        [value["x"], value["y"], value["width"], value["height"]],
        [21 / 84 * 100, 14 / 56 * 100, 42 / 84 * 100, 28 / 56 * 100],
        atol=1e-3,
    )
