"""Classification, grounded segmentation and interactive smart tools through the Flask app (fake models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from backend.app import create_app
from backend.settings import ServerSettings
from tests.fakes import FakeSegmenter, SlowFakeDetector
from tests.helpers import data_uri, image_array, make_task

RECT_AND_BRUSH = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Dog"/></RectangleLabels>
<BrushLabels name="paint" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
<PolygonLabels name="outline" toName="image"><Label value="Cat"/></PolygonLabels>
<Choices name="scene" toName="image"><Choice value="Indoor"/><Choice value="Outdoor"/></Choices>
</View>"""
SMART = """<View><Image name="image" value="$image"/>
<KeyPointLabels name="clicks" toName="image" smart="true"><Label value="Cat"/><Label value="Dog"/></KeyPointLabels>
<RectangleLabels name="box" toName="image" smart="true"><Label value="Cat"/></RectangleLabels>
<BrushLabels name="paint" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
</View>"""
FAKES = {"detection": {"model": "slow_fake"}, "segmentation": {"model": "fake_segmenter"},
         "classification": {"model": "fake_classifier"}, "interactive": {"model": "fake_segmenter"}}  # fmt: skip


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()


def setup(client: FlaskClient, config: str, extra: dict[str, Any] = FAKES) -> str:
    body = {"project": "7.1", "schema": config, "extra_params": extra, "hostname": "http://localhost:8080"}
    response = client.post("/setup", json=body)
    assert response.status_code == 200, response.json
    return response.json["model_version"]


def predict(client: FlaskClient, config: str, tasks: list[dict], context: Any = None) -> list[dict]:
    body = {"tasks": tasks, "project": "7.1", "label_config": config, "params": {"context": context}}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    return response.json["results"]


def test_boxes_masks_and_choices_from_one_config_with_one_detector_pass(client: FlaskClient) -> None:
    version = setup(client, RECT_AND_BRUSH)
    assert version.startswith("fake_classifier+fake_segmenter+slow_fake-")
    SlowFakeDetector.calls.clear()
    (entry,) = predict(client, RECT_AND_BRUSH, [make_task(1, data_uri(60, 40))])
    # boxes and paint share labels and detector settings: one pass serves both; outline has other labels
    assert SlowFakeDetector.calls == [1, 1]
    by = {}
    for region in entry["result"]:
        by.setdefault(region["from_name"], []).append(region)
    boxes = sorted((r["value"]["rectanglelabels"][0], r["score"]) for r in by["boxes"])
    paint = sorted((r["value"]["brushlabels"][0], r["score"]) for r in by["paint"])
    assert boxes == paint == [("Cat", pytest.approx(0.9)), ("Dog", pytest.approx(0.5))]
    for region in by["paint"]:  # each mask fills its box: 10%..90% of 60x40
        mask = np.reshape(decode_rle(region["value"]["rle"]), (40, 60, 4))[:, :, 3] > 0
        assert mask[4:36, 6:54].all() and mask.sum() == 32 * 48
    (outline,) = by["outline"]
    assert outline["value"]["polygonlabels"] == ["Cat"] and len(outline["value"]["points"]) == 4
    (scene,) = by["scene"]
    assert scene["value"] == {"choices": ["Indoor"]} and scene["score"] == pytest.approx(0.7)
    assert entry["model_version"] == version
    assert LabelInterface(RECT_AND_BRUSH).validate_prediction(entry)


def test_keypoint_clicks_give_one_brush_mask_with_the_chosen_label(client: FlaskClient) -> None:
    version = setup(client, SMART)
    embeds = FakeSegmenter.embeds
    image = data_uri(100, 50)
    click = {"type": "keypointlabels", "from_name": "clicks", "to_name": "image", "original_width": 100,
             "original_height": 50, "is_positive": True, "value": {"x": 50.0, "y": 50.0, "width": 0.5,
                                                                   "keypointlabels": ["Dog"]}}  # fmt: skip
    (entry,) = predict(client, SMART, [make_task(3, image)], {"result": [click]})
    (region,) = entry["result"]
    assert region["from_name"] == "paint" and region["value"]["brushlabels"] == ["Dog"]
    mask = np.reshape(decode_rle(region["value"]["rle"]), (50, 100, 4))[:, :, 3] > 0
    assert (
        mask[25, 50]
        and mask.sum() == ((np.mgrid[:50, :100][0] - 25) ** 2 + (np.mgrid[:50, :100][1] - 50) ** 2 <= 25).sum()
    )
    assert entry["model_version"] == version and FakeSegmenter.embeds == embeds + 1
    negative = {**click, "is_positive": False, "value": {**click["value"], "x": 52.0}}
    (entry,) = predict(client, SMART, [make_task(3, image)], {"result": [click, negative]})
    smaller = np.reshape(decode_rle(entry["result"][0]["value"]["rle"]), (50, 100, 4))[:, :, 3] > 0
    assert smaller.sum() < mask.sum() and not smaller[25, 52]
    assert FakeSegmenter.embeds == embeds + 1  # second interaction on the same image: embedding reused


def test_a_smart_rectangle_is_a_box_prompt(client: FlaskClient) -> None:
    setup(client, SMART)
    box = {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": 100,
           "original_height": 50, "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["Cat"]}}  # fmt: skip
    (entry,) = predict(client, SMART, [make_task(4, data_uri(100, 50))], {"result": [box]})
    (region,) = entry["result"]
    mask = np.reshape(decode_rle(region["value"]["rle"]), (50, 100, 4))[:, :, 3] > 0
    assert region["value"]["brushlabels"] == ["Cat"] and mask.sum() == 30 * 20
    assert LabelInterface(SMART).validate_prediction(entry)


def test_interactive_without_a_mask_control_or_label_answers_empty(client: FlaskClient) -> None:
    setup(client, SMART)
    click = {"type": "keypointlabels", "from_name": "clicks", "to_name": "image", "value": {"x": 5, "y": 5,
             "keypointlabels": ["Bird"]}}  # fmt: skip
    (entry,) = predict(client, SMART, [make_task(5, data_uri())], {"result": [click]})
    assert entry["result"] == []
    bad = client.post("/predict", json={"tasks": [make_task(5, data_uri())], "label_config": SMART,
                                        "params": {"context": {"result": [{"from_name": "clicks"}]}}})  # fmt: skip
    assert bad.status_code == 400 and "smart-tool region" in bad.json["error"]


def test_segmentation_settings_are_checked(client: FlaskClient) -> None:
    body = {"project": "7.1", "schema": SMART, "extra_params": {"interactive": {"model": "slow_fake"}}}
    response = client.post("/setup", json=body)
    assert response.status_code == 400 and "does detection, not segmentation" in response.json["error"]


POLY = """<View><Image name="image" value="$image"/>
<PolygonLabels name="outline" toName="image"><Label value="Cat"/><Label value="Remote"/></PolygonLabels></View>"""


def test_sam3_segments_from_the_labels_with_no_detector(client: FlaskClient, tiny: Any) -> None:
    """Each label is a SAM 3 prompt; each of its masks becomes polygons covering exactly the hole-filled mask."""
    import torch
    from matplotlib.path import Path as Polygon
    from scipy import ndimage
    from transformers import AutoProcessor, Sam3Model

    model_dir = str(tiny("sam3"))
    extra = {"segmentation": {"model": "sam3", "model_id": model_dir, "score_threshold": 0.0, "min_area": 1,
                              "nms_threshold": 1.0, "polygon_parts": "all", "polygon_tolerance": 0.0}}  # fmt: skip
    version = setup(client, POLY, extra)
    assert version.startswith("sam3-")
    (entry,) = predict(client, POLY, [make_task(1, data_uri(64, 48))])
    assert LabelInterface(POLY).validate_prediction(entry)

    processor, model = AutoProcessor.from_pretrained(model_dir), Sam3Model.from_pretrained(model_dir).eval()
    image = image_array(64, 48)
    expected: dict[tuple[str, float], np.ndarray] = {}
    for label in ("Cat", "Remote"):
        inputs = processor(images=image, text=label, return_tensors="pt", input_data_format="channels_last")
        with torch.inference_mode():
            outputs = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        (found,) = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[(48, 64)])
        for mask, score in zip(found["masks"].numpy().astype(bool), found["scores"].tolist(), strict=True):
            if mask.any():
                key = (label, round(score, 5))
                expected[key] = expected.get(key, np.zeros_like(mask)) | ndimage.binary_fill_holes(mask)
    assert len(expected) >= 2

    yy, xx = np.mgrid[:48, :64]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    got: dict[tuple[str, float], np.ndarray] = {}
    for region in entry["result"]:
        key = (region["value"]["polygonlabels"][0], round(region["score"], 5))
        inside = Polygon(np.asarray(region["value"]["points"]) / 100 * [64, 48]).contains_points(centres)
        got[key] = got.get(key, np.zeros((48, 64), dtype=bool)) | inside.reshape(48, 64)
    assert got.keys() == expected.keys()
    for key, mask in expected.items():
        np.testing.assert_array_equal(got[key], mask)
