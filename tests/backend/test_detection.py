from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from label_studio_sdk.label_interface import LabelInterface

from backend.detection import detection_regions, finish_detections
from backend.encode import detections_to_rectangles, task_score
from backend.plan import build_plan
from tests.helpers import RECT_CONFIG, make_detections


def target(project: dict | None = None):
    return build_plan(RECT_CONFIG, project or {}, {}, device="cpu", dtype="auto").targets[0]


def test_rectangles_are_percent_of_the_image_and_clipped() -> None:
    det = make_detections([[10, 20, 50, 60], [-5, -5, 300, 10]], [0.9, 0.4], [0, 1])
    regions = detections_to_rectangles(det, ("Cat", "Remote"), image_wh=(100, 200), from_name="label", to_name="image")
    assert regions[0]["value"] == {
        "x": 10.0, "y": 10.0, "width": 40.0, "height": 20.0, "rotation": 0, "rectanglelabels": ["Cat"],
    }  # fmt: skip
    assert regions[1]["value"]["x"] == 0 and regions[1]["value"]["width"] == 100.0
    assert regions[1]["value"]["y"] == 0 and regions[1]["value"]["height"] == pytest.approx(5.0)
    for region in regions:
        assert region["original_width"] == 100 and region["original_height"] == 200
        assert region["image_rotation"] == 0 and region["type"] == "rectanglelabels"
    assert regions[0]["score"] == pytest.approx(0.9)
    assert len({r["id"] for r in regions}) == 2


def test_boxes_with_no_area_after_clipping_are_dropped_and_empty_is_empty() -> None:
    det = make_detections([[120, 10, 150, 20]], [0.9], [0])
    assert detections_to_rectangles(det, ("Cat",), image_wh=(100, 100), from_name="l", to_name="i") == []
    assert (
        detections_to_rectangles(sv.Detections.empty(), ("Cat",), image_wh=(10, 10), from_name="l", to_name="i") == []
    )


def test_prompts_merge_into_their_label_and_nms_removes_duplicates() -> None:
    plan = target()  # prompts: "a cat"->Cat, "cat"->Cat, "Remote"->Remote
    det = make_detections(
        [[10, 10, 50, 50], [11, 11, 50, 50], [10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.9, 0.7, 0.6], [0, 1, 2, 0]
    )
    out = finish_detections(det, plan, (100, 100))
    labels = [plan.target.labels[i] for i in out.class_id]
    # "a cat" and "cat" found one object: one Cat box survives (the best); Remote on the same spot is kept
    assert sorted(zip(labels, out.confidence.tolist(), strict=True)) == [
        ("Cat", pytest.approx(0.6)), ("Cat", pytest.approx(0.9)), ("Remote", pytest.approx(0.7)),
    ]  # fmt: skip
    assert list(out.confidence) == sorted(out.confidence, reverse=True)


def test_class_agnostic_nms_and_max_detections() -> None:
    det = make_detections([[10, 10, 50, 50], [10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8, 0.7], [0, 2, 0])
    agnostic = finish_detections(det, target({"detection": {"class_agnostic_nms": True}}), (100, 100))
    assert agnostic.confidence.tolist() == pytest.approx([0.9, 0.7])
    capped = finish_detections(det, target({"detection": {"max_detections": 1}}), (100, 100))
    assert capped.confidence.tolist() == pytest.approx([0.9])
    off = finish_detections(det, target({"detection": {"nms_threshold": 1.0}}), (100, 100))
    assert len(off) == 3


def test_regions_validate_against_label_studio() -> None:
    det = make_detections([[10, 10, 50, 50], [0, 0, 640, 480]], [0.9, 0.5], [0, 2])
    regions = detection_regions(finish_detections(det, target(), (640, 480)), target(), (640, 480))
    prediction = {"result": regions, "score": task_score(regions), "model_version": "v"}
    assert LabelInterface(RECT_CONFIG).validate_prediction(prediction)
    assert {r["value"]["rectanglelabels"][0] for r in regions} == {"Cat", "Remote"}


def test_task_score_is_mean_region_score_or_zero() -> None:
    assert task_score([]) == 0.0
    assert task_score([{"score": 0.2}, {"score": 0.6}]) == pytest.approx(0.4)
    assert np.isfinite(task_score([{"score": 1.0}]))
