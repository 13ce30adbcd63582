from __future__ import annotations

import cv2
import numpy as np
import pytest
import supervision as sv
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from matplotlib.path import Path
from scipy import ndimage

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
    # the square covers pixels 10..29 x 5..24: its outline runs along their outer edges, 10..30 x 5..25
    corners = [(x / 60 * 100, y / 40 * 100) for x in (10, 30) for y in (5, 25)]
    np.testing.assert_allclose(sorted(map(tuple, points)), corners, atol=1e-4)
    assert region["value"]["polygonlabels"] == ["Cat"] and region["value"]["closed"] is True
    assert LabelInterface(POLY).validate_prediction({"result": [region], "score": 0.9, "model_version": "v"})


def centres_inside(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Which pixel centres (x + 0.5, y + 0.5) lie inside any of the polygons, by matplotlib's point-in-polygon."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    inside = np.zeros(len(centres), dtype=bool)
    for points in parts:
        inside |= Path(points).contains_points(centres)
    return inside.reshape(shape)


def shoelace(points: np.ndarray) -> float:
    x, y = points.T
    return abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1))) / 2


def blob(seed: int, shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    """Smooth random shapes with bays, specks touching them at corners, and a ring around a hole with an island."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape), (0, 0), sigmaX=rng.uniform(0.6, 3.0))
    mask = (noise > np.quantile(noise, rng.uniform(0.3, 0.8))) | (rng.random(shape) < 0.03)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    y, x = rng.integers(7, shape[0] - 7), rng.integers(7, shape[1] - 7)
    radius2 = (yy - y) ** 2 + (xx - x) ** 2
    mask[radius2 < 16] = False
    mask[(radius2 >= 16) & (radius2 < 40)] = True
    mask[y, x] = True
    return mask


EXACT = SegmentationPost(polygon_tolerance=0.0, min_area=0)


@pytest.mark.parametrize(("x", "y"), [(0, 0), (3, 7), (52, 32)])
@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_an_8x8_square_gives_its_four_outer_corners(x: int, y: int, tolerance: float) -> None:
    (points,) = polygons(square(box=(x, y, x + 8, y + 8)), SegmentationPost(polygon_tolerance=tolerance))
    assert sorted(map(tuple, points.tolist())) == [(x, y), (x, y + 8), (x + 8, y), (x + 8, y + 8)]


@pytest.mark.parametrize("seed", range(24))
def test_exact_polygons_hold_the_centres_of_the_hole_filled_mask_and_its_area(seed: int) -> None:
    mask = blob(seed)
    parts = polygons(mask, EXACT)
    filled = ndimage.binary_fill_holes(mask)
    assert filled.sum() > mask.sum() and len(parts) > 1  # the blobs do have holes and several parts
    np.testing.assert_array_equal(centres_inside(parts, mask.shape), filled)
    assert sum(shoelace(points) for points in parts) == filled.sum()


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9)))
def test_exact_polygons_of_any_small_mask_cover_it_hole_filled(mask: np.ndarray) -> None:
    parts = polygons(mask, EXACT)
    filled = ndimage.binary_fill_holes(mask)
    np.testing.assert_array_equal(centres_inside(parts, mask.shape), filled)
    assert sum(shoelace(points) for points in parts) == filled.sum()


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
