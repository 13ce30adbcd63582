"""Annotations -> examples: which annotation teaches, and regions that cannot be trusted are left out."""

from __future__ import annotations

import numpy as np
import pytest

from backend.label_config import parse_targets
from backend.learning.events import Annotation
from backend.learning.examples import box_examples, choice_examples, region_shape, teaching

MASKS = """<View><Image name="image" value="$image"/>
<BrushLabels name="mask" toName="image"><Label value="Cat"/></BrushLabels></View>"""
CHOICES = """<View><Image name="image" value="$image"/>
<Choices name="c" toName="image"><Choice value="A"/><Choice value="B"/></Choices></View>"""


def annotation(id_: int, task: int, label: str, **fields: object) -> Annotation:
    result = ({"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": [label]}},)
    return Annotation(id_, task, {"image": f"/data/upload/{task}.png"}, result, **fields)  # type: ignore[arg-type]


def test_ground_truth_then_the_newest_teaches_and_skipped_ones_never_do() -> None:
    chosen = teaching([
        annotation(1, 1, "A", updated_at=1.0), annotation(2, 1, "B", updated_at=5.0),  # newest wins
        annotation(3, 2, "A", ground_truth=True, updated_at=1.0), annotation(4, 2, "B", updated_at=9.0),  # truth wins
        annotation(5, 3, "A", cancelled=True),  # skipped: task 3 teaches nothing
    ])  # fmt: skip
    assert [a.id for a in chosen] == [2, 3]
    (target,) = parse_targets(CHOICES)
    assert [sorted(e.labels) for e in choice_examples(target, chosen)] == [[1], [0]]


def brush(width: int, height: int, declared: int | None = None) -> dict:
    from label_studio_sdk.converter.brush import encode_rle

    flat = np.zeros(4 * width * height, np.uint8)
    flat[: 4 * width * 2] = 255  # the top two rows
    rle = encode_rle(flat)
    if declared is not None:
        rle = list(declared.to_bytes(4, "big")) + list(rle[4:])
    return {"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": width,
            "original_height": height, "value": {"format": "rle", "rle": rle, "brushlabels": ["Cat"]}}  # fmt: skip


def test_a_brush_mask_becomes_its_box_and_a_lying_one_is_left_out() -> None:
    box, mask = region_shape(brush(64, 32), "brushlabels")
    assert box == pytest.approx([0, 0, 100, 2 / 32 * 100])  # the top two of 32 rows, full width
    assert mask.shape == (64, 128) and mask[:4].all() and not mask[4:].any()  # on the 128-cell grid
    assert region_shape(brush(64, 32, declared=2**30), "brushlabels") is None  # declares a billion values
    assert region_shape({**brush(64, 32), "original_width": 0}, "brushlabels") is None  # would divide by zero
    polygon = {"original_width": 0, "original_height": 10, "value": {"points": [[0, 0], [5, 5], [0, 5]]}}
    assert region_shape(polygon, "polygonlabels") is None


def test_an_annotation_with_no_box_is_an_image_without_objects() -> None:
    (target,) = parse_targets(MASKS)
    empty = Annotation(1, 1, {"image": "x"}, ())
    (example,) = box_examples(target, [empty])
    assert len(example.labels) == 0 and example.masks is not None and len(example.masks) == 0
