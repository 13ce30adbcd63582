from __future__ import annotations

import math

import numpy as np
import pytest

from backend.encode import brush_region, choices_region, detections_to_rectangles, polygon_region, task_score
from tests.helpers import make_detections

# raw score -> region score: SAM's predicted IoU can fall below 0 (a click gave -0.0156) or pass 1
SCORES = [(-0.0156, 0.0), (1.3, 1.0), (math.nan, 0.0), (0.42, 0.42), (0.0, 0.0), (1.0, 1.0)]


@pytest.mark.parametrize(("raw", "expected"), SCORES)
def test_every_region_score_is_within_0_and_1(raw: float, expected: float) -> None:
    names = {"from_name": "label", "to_name": "image"}
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 3:9] = True
    det = make_detections([[1, 2, 8, 9]], [raw], [0])
    regions = [
        *detections_to_rectangles(det, ("Cat",), image_wh=(20, 10), **names),
        polygon_region(np.array([[1.0, 2], [8, 2], [8, 9]]), "Cat", raw, image_wh=(20, 10), **names),
        brush_region(mask, "Cat", raw, **names),
        choices_region(["Cat"], raw, **names),
    ]
    assert len(regions) == 4
    assert [r["score"] for r in regions] == pytest.approx([expected] * 4, abs=1e-6)
    assert task_score(regions) == pytest.approx(expected, abs=1e-6)
