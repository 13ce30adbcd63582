"""Tile windows and the merge across seams, by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.refine.tiling import Tiling, merge_tiles, windows
from model_adapters.base import SettingsError
from tests.helpers import make_detections


def test_windows_of_a_3000_by_2000_image_by_hand() -> None:
    # x: 4 tiles, stride (3000 - 1024) / 3 = 658.7 <= 0.8 * 1024; y: 3 tiles, stride (2000 - 1024) / 2 = 488
    tiles = windows(3000, 2000, Tiling(tile=1024, overlap=0.2))
    assert sorted({w[0] for w in tiles}) == [0, 659, 1317, 1976] and sorted({w[1] for w in tiles}) == [0, 488, 976]
    assert len(tiles) == 12 and all(x1 - x0 == 1024 and y1 - y0 == 1024 for x0, y0, x1, y1 in tiles)


@given(width=st.integers(1, 9000), height=st.integers(1, 9000), tile=st.integers(256, 2048),
       overlap=st.floats(0, 0.5))  # fmt: skip
def test_windows_cover_the_image_with_the_overlap_and_stay_inside(width, height, tile, overlap) -> None:
    tiling = Tiling(tile=tile, overlap=overlap)
    tiles = windows(width, height, tiling)
    covered = np.zeros((min(height, 300), min(width, 300)), dtype=bool)  # the top-left corner, checked fully
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and x1 - x0 <= tile and y1 - y0 <= tile
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({w[0] for w in tiles})
    assert xs[0] == 0 and max(w[2] for w in tiles) == width
    assert all(b - a <= tile * (1 - overlap) + 1 for a, b in itertools.pairwise(xs))  # neighbours share


def test_only_images_larger_than_a_tile_and_the_floor_are_tiled() -> None:
    assert not Tiling(tile=1024).applies(1024, 1024) and Tiling(tile=1024).applies(1025, 10)
    assert not Tiling(tile=1024, above=2048).applies(2048, 1000) and Tiling(tile=1024, above=2048).applies(2049, 5)


def test_an_object_cut_by_a_seam_becomes_one_box_and_separate_objects_stay_apart() -> None:
    left = make_detections([[1010, 100, 1024, 114], [10, 10, 30, 30]], [0.7, 0.9], [0, 0])  # a part at the edge
    right = make_detections([[351, 100, 370, 114], [351, 100, 370, 114]], [0.8, 0.6], [0, 1])  # whole, at x0=659
    merged = merge_tiles([((0, 0), left), ((659, 0), right)], merge_ios=0.5)
    rows = sorted(zip(merged.class_id.tolist(), merged.xyxy.tolist(), merged.confidence.tolist(), strict=True))
    merged_score = (0.7 * 14 * 14 + 0.8 * 19 * 14) / (14 * 14 + 19 * 14)  # the parts' scores, weighted by area
    assert rows == [(0, [10, 10, 30, 30], pytest.approx(0.9)), (0, [1010, 100, 1029, 114], pytest.approx(merged_score)),
                    (1, [1010, 100, 1029, 114], pytest.approx(0.6))]  # fmt: skip


@pytest.mark.parametrize("bad", [{"tile": 10}, {"overlap": 0.9}, {"merge_ios": 0}])
def test_bad_tilings_are_refused(bad: dict) -> None:
    with pytest.raises(SettingsError):
        Tiling(**bad)
