from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from backend.label_config import parse_targets
from backend.plan import SegmentationPost
from backend.segmentation import mask_regions, polygons

POLY = """<View><Image name="image" value="$image"/>
<PolygonLabels name="poly" toName="image"><Label value="Cat"/><Label value="Dog"/></PolygonLabels></View>"""
BRUSH = """<View><Image name="image" value="$image"/>
<BrushLabels name="brush" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels></View>"""


def masks_of(*masks: np.ndarray, labels: tuple[int, ...] = (0,)) -> sv.Detections:
    stack = np.stack(masks)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(stack).astype(np.float32), mask=stack,
        confidence=np.linspace(0.9, 0.5, len(stack)).astype(np.float32), class_id=np.asarray(labels),
    )  # fmt: skip


def square(h: int = 40, w: int = 60, box: tuple[int, int, int, int] = (10, 5, 30, 25)) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def test_polygon_of_a_square_in_percent() -> None:
    (target,) = parse_targets(POLY)
    (region,) = mask_regions(masks_of(square()), target, SegmentationPost(), (60, 40))
    points = np.asarray(region["value"]["points"])
    assert len(points) == 4
    assert points[:, 0].min() == pytest.approx(10.5 / 60 * 100) and points[:, 0].max() == pytest.approx(29.5 / 60 * 100)
    assert points[:, 1].min() == pytest.approx(5.5 / 40 * 100) and points[:, 1].max() == pytest.approx(24.5 / 40 * 100)
    assert region["value"]["polygonlabels"] == ["Cat"] and region["value"]["closed"] is True
    assert LabelInterface(POLY).validate_prediction({"result": [region], "score": 0.9, "model_version": "v"})


def test_parts_largest_or_all_and_small_parts_dropped_and_holes_filled() -> None:
    mask = square(box=(2, 2, 30, 30)) | square(box=(40, 10, 50, 20)) | square(box=(55, 35, 57, 37))
    mask[10:15, 10:15] = False  # a hole: filled in the polygon
    parts = polygons(mask, SegmentationPost(min_area=16))
    assert len(parts) == 2  # the 2x2 speck is under min_area
    assert parts[0][:, 0].max() < 31  # largest first
    (target,) = parse_targets(POLY)
    assert len(mask_regions(masks_of(mask), target, SegmentationPost(), (60, 40))) == 1
    assert len(mask_regions(masks_of(mask), target, SegmentationPost(polygon_parts="all"), (60, 40))) == 2


def test_simplification_tolerance_reduces_points_of_a_circle() -> None:
    yy, xx = np.mgrid[:200, :200]
    circle = (yy - 100) ** 2 + (xx - 100) ** 2 < 80**2
    exact = polygons(circle, SegmentationPost(polygon_tolerance=0))[0]
    simple = polygons(circle, SegmentationPost(polygon_tolerance=2.0))[0]
    assert len(simple) < len(exact) / 4
    assert np.abs(np.hypot(*(simple - 100).T) - 80).max() < 3.5


def test_brush_region_is_label_studio_rle_of_the_mask() -> None:
    (target,) = parse_targets(BRUSH)
    mask = square()
    (region,) = mask_regions(masks_of(mask, labels=(1,)), target, SegmentationPost(), (60, 40))
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Dog"]
    decoded = np.reshape(decode_rle(region["value"]["rle"]), (40, 60, 4))[:, :, 3]
    np.testing.assert_array_equal(decoded > 0, mask)
    assert (region["original_width"], region["original_height"]) == (60, 40)
    assert LabelInterface(BRUSH).validate_prediction({"result": [region], "score": 0.9, "model_version": "v"})
