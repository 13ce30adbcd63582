"""Generative grounding models end to end through ``/setup`` and ``/predict`` (tiny weights, forced answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from label_studio_sdk.label_interface import LabelInterface
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

from backend.app import create_app
from backend.settings import ServerSettings
from tests.helpers import data_uri, make_task
from tests.model_adapters.forced import force
from tests.model_adapters.test_kosmos2 import frame_by_hand

RECT = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Dog"/></RectangleLabels></View>"""


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
