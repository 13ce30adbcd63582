"""Crop verification's pieces, by hand: crops, a classifier's rows as class shares, the verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from backend.refine.verify import class_shares, crops, verdicts
from model_adapters.classification import classification_detections
from tests.helpers import make_detections


def test_a_crop_is_the_box_widened_by_the_margin_in_the_pixels_frame() -> None:
    pixels = np.arange(50 * 100 * 3, dtype=np.uint32).astype(np.uint8).reshape(50, 100, 3)
    # original 200 x 100, pixels at half size; box 20..60 x 20..40, margin 0.25: 10..70 x 15..45 -> /2 -> 5..35 x 7..23
    (crop,) = crops(pixels, np.asarray([[20, 20, 60, 40]], dtype=np.float32), (2.0, 2.0), 0.25)
    assert np.array_equal(crop, pixels[7:23, 5:35])
    edge, dot = crops(pixels, np.asarray([[190, 90, 200, 100], [7, 7, 7.2, 7.2]], dtype=np.float32), (2.0, 2.0), 0.5)
    # 185..205 x 85..105 -> /2 -> 92.5..102.5 x 42.5..52.5 -> clipped: 92..100 x 42..50
    assert np.array_equal(edge, pixels[42:50, 92:100]) and dot.shape[:2] == (1, 1)  # inside the image; never empty


def test_softmax_prompts_of_a_class_add_up_and_sigmoid_ones_take_the_best_then_normalise() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    prompts, owners = ["car", "auto", "person", "background"], (0, 0, 1, 2)
    soft = classification_detections(np.asarray([0.2, 0.1, 0.3, 0.4]), image, prompts, "softmax")
    assert class_shares(soft, owners, 3).tolist() == pytest.approx([0.3, 0.3, 0.4])
    sig = classification_detections(np.asarray([0.2, 0.6, 0.1, 0.1]), image, prompts, "sigmoid")
    assert class_shares(sig, owners, 3).tolist() == pytest.approx([0.75, 0.125, 0.125])


def found() -> sv.Detections:
    out = make_detections([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], [0.64, 0.9, 0.5], [0, 0, 1])
    out.data["class_name"] = np.asarray(["Car", "Car", "Person"], dtype=object)
    return out


SHARES = np.asarray([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])  # Car, Person, background


def test_drop_keeps_the_boxes_whose_crop_agrees_rescored_by_the_geometric_mean() -> None:
    out = verdicts(found(), SHARES, ("Car", "Person"), "drop")
    assert out.xyxy.tolist() == [[0, 0, 1, 1]] and out.confidence.tolist() == pytest.approx([(0.64 * 0.8) ** 0.5])


def test_relabel_gives_a_box_its_crops_label_and_background_still_drops() -> None:
    out = verdicts(found(), SHARES, ("Car", "Person"), "relabel")
    assert out.xyxy.tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert out.class_id.tolist() == [0, 0] and out.data["class_name"].tolist() == ["Car", "Car"]
    assert out.confidence.tolist() == pytest.approx([(0.64 * 0.8) ** 0.5, (0.5 * 0.6) ** 0.5])
