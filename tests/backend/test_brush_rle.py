"""Byte-identity of backend.brush_rle with the Label Studio SDK's brush RLE encoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle
from PIL import Image, ImageDraw

from backend.brush_rle import encode_values, mask_to_rle

SLOW_OK = [HealthCheck.too_slow]
SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=SLOW_OK)

# Pixel run lengths around the reference's size-class edges (times four: 8, 16, 256 elements) and its
# 65536-element chunk size (16384 pixels).
EDGE_RUNS = [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769]


def reference(mask: np.ndarray) -> list[int]:
    return mask2rle((np.asarray(mask) != 0).astype(np.uint8) * 255)


def check(mask: np.ndarray, decode: bool = True) -> None:
    rle = mask_to_rle(mask)
    assert rle == reference(mask)
    assert all(type(b) is int and 0 <= b <= 255 for b in rle)
    if decode:
        h, w = mask.shape
        rgba = decode_rle(rle).reshape(h, w, 4)
        expected = np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)
        np.testing.assert_array_equal(rgba[:, :, 3], expected)
        for channel in range(3):
            np.testing.assert_array_equal(rgba[:, :, channel], expected)


shapes = st.tuples(st.integers(1, 48), st.integers(1, 48))


@SETTINGS
@given(mask=shapes.flatmap(lambda s: arrays(np.bool_, s)))
def test_random_bool_masks(mask: np.ndarray) -> None:
    check(mask)


@SETTINGS
@given(
    shape=shapes,
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    on_value=st.integers(1, 255),
)
def test_random_uint8_masks_any_nonzero_is_on(shape, density, seed, on_value) -> None:
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random(shape) < density, on_value, 0).astype(np.uint8)
    check(mask)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 300), st.integers(1, 300)), on=st.booleans())
def test_constant_masks_including_runs_past_the_chunk_size(shape, on) -> None:
    check(np.full(shape, on, dtype=bool))


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 500), (500, 1), (129, 129), (200, 400)])
@pytest.mark.parametrize("on", [False, True])
def test_fixed_shapes(shape, on) -> None:
    check(np.full(shape, on, dtype=bool))


@SETTINGS
@given(shape=shapes, period=st.integers(1, 5), phase=st.integers(0, 1), checker=st.booleans())
def test_alternating_pixels(shape, period, phase, checker) -> None:
    yy, xx = np.indices(shape)
    index = xx + yy if checker else yy * shape[1] + xx
    check(((index // period + phase) % 2).astype(bool))


@SETTINGS
@given(
    runs=st.lists(st.one_of(st.sampled_from(EDGE_RUNS), st.integers(1, 300)), min_size=1, max_size=12),
    first_on=st.booleans(),
    width=st.integers(1, 700),
)
def test_runs_at_size_class_edges(runs, first_on, width) -> None:
    flat = np.repeat(np.arange(len(runs)) % 2 == (0 if first_on else 1), runs)
    flat = np.concatenate([flat, np.zeros(-flat.size % width, dtype=bool)])
    check(flat.reshape(-1, width), decode=flat.size <= 40_000)


@SETTINGS
@given(
    shape=st.tuples(st.integers(8, 200), st.integers(8, 200)),
    seed=st.integers(0, 2**32 - 1),
    n_shapes=st.integers(0, 6),
)
def test_random_blobs(shape, seed, n_shapes) -> None:
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n_shapes):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h), rng.uniform(1, w)
        if rng.random() < 0.5:
            mask ^= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            mask |= (np.abs(yy - cy) <= ry / 2) & (np.abs(xx - cx) <= rx / 2)
    check(mask)


def test_real_mask_circle_and_polygon_480x640() -> None:
    h, w = 480, 640
    yy, xx = np.ogrid[:h, :w]
    circle = (yy - 220) ** 2 + (xx - 250) ** 2 <= 150**2
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon([(380, 40), (620, 120), (560, 460), (410, 300), (330, 420)], fill=255)
    mask = circle | (np.asarray(canvas) > 0)
    mask[200:240, 230:270] = False  # a hole
    check(mask)
    check(mask.astype(np.uint8) * 255)


def test_input_dtypes_and_layouts_agree() -> None:
    rng = np.random.default_rng(7)
    mask = rng.random((37, 53)) < 0.3
    expected = reference(mask)
    assert mask_to_rle(mask.astype(np.uint8)) == expected
    assert mask_to_rle(mask.astype(np.int64) * 3) == expected
    assert mask_to_rle(mask.astype(np.float32)) == expected
    fortran = np.asfortranarray(mask)
    assert mask_to_rle(fortran) == expected
    transposed = np.ascontiguousarray(mask.T).T  # a non-contiguous view with the same values
    assert mask_to_rle(transposed) == expected
    big = np.zeros((74, 106), dtype=bool)
    big[::2, ::2] = mask
    assert mask_to_rle(big[::2, ::2]) == expected


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 2)), np.zeros((0, 4)), np.zeros((3, 0))])
def test_rejects_non_2d_or_empty(bad) -> None:
    with pytest.raises(ValueError):
        mask_to_rle(bad)


@SETTINGS
@given(values=arrays(np.uint8, st.integers(1, 400), elements=st.integers(0, 3)))
def test_encode_values_matches_encode_rle_with_literals(values: np.ndarray) -> None:
    assert encode_values(values) == encode_rle(values)


@pytest.mark.parametrize("length", [1, 2, 8, 9, 16, 17, 256, 257, 65536, 65537, 65539, 131072, 131073])
def test_encode_values_long_run_remainders(length: int) -> None:
    values = np.zeros(length + 3, dtype=np.uint8)
    values[:length] = 200
    assert encode_values(values) == encode_rle(values)


BAD_VALUES = [np.array([1.5]), np.array([256]), np.array([-1]), np.zeros((2, 2), np.uint8), np.zeros(0, bool)]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_encode_values_rejects_bad_input(bad) -> None:
    with pytest.raises(ValueError):
        encode_values(bad)


def test_module_imports_numpy_only() -> None:
    code = "import sys, backend.brush_rle; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
