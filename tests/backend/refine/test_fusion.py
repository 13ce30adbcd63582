"""Weighted boxes fusion: hand-computed cases, and parity with the reference implementation on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.refine.fusion import MEMBERS_FIELD, weighted_boxes_fusion


def det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> sv.Detections:
    return sv.Detections(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), confidence=np.asarray(scores),
                         class_id=np.asarray(labels, dtype=int))  # fmt: skip


def test_two_members_agreeing_fuse_into_their_score_weighted_mean_box() -> None:
    a = det([[0, 0, 10, 10]], [0.9], [0])
    b = det([[2, 0, 12, 10]], [0.6], [0])
    c = det([[50, 50, 60, 60]], [0.8], [0])  # found by the third member only
    fused = weighted_boxes_fusion([a, b, c], [1, 1, 1])
    order = np.argsort(fused.xyxy[:, 0])
    box, alone = order
    # x1 = (0*0.9 + 2*0.6) / 1.5 = 0.8; x2 = (10*0.9 + 12*0.6) / 1.5 = 10.8; score = 0.75 * min(3, 2) / 3 = 0.5
    assert fused.xyxy[box].tolist() == pytest.approx([0.8, 0, 10.8, 10])
    assert fused.confidence[box] == pytest.approx(0.5) and fused.confidence[alone] == pytest.approx(0.8 / 3)
    assert fused.data[MEMBERS_FIELD][box] == 2 and fused.data[MEMBERS_FIELD][alone] == 1


def test_labels_never_fuse_and_weights_scale_scores() -> None:
    fused = weighted_boxes_fusion([det([[0, 0, 10, 10]], [0.5], [0]), det([[0, 0, 10, 10]], [0.5], [1])], [3, 1])
    assert sorted(zip(fused.class_id.tolist(), fused.confidence.tolist(), strict=True)) == [
        (0, pytest.approx(1.5 * 1 / 4)), (1, pytest.approx(0.5 * 1 / 4))]  # fmt: skip


@st.composite
def members(draw: st.DrawFn) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 8))
        corners = np.asarray(draw(st.lists(st.tuples(*[st.floats(0, 0.45)] * 2, *[st.floats(0.5, 1)] * 2),
                                           min_size=n, max_size=n)), dtype=np.float64).reshape(-1, 4)  # fmt: skip
        scores = np.asarray(draw(st.lists(st.floats(0.01, 1), min_size=n, max_size=n, unique=True)))
        labels = np.asarray(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
        out.append((corners, scores, labels))
    return out


@settings(max_examples=300, deadline=None)
@given(parts=members(), weights_seed=st.integers(0, 10**6))
def test_equals_the_reference_implementation(parts, weights_seed: int) -> None:
    from ensemble_boxes import weighted_boxes_fusion as reference

    weights = np.random.default_rng(weights_seed).uniform(0.5, 2, len(parts)).round(3).tolist()
    scores_all = np.concatenate([s * w for (_, s, _), w in zip(parts, weights, strict=True)])
    if len(np.unique(scores_all.round(9))) != len(scores_all):
        return  # ties are ordered differently by the reference (reversed argsort): not comparable
    boxes, scores, labels = ([p[i].tolist() for p in parts] for i in range(3))
    want = reference(boxes, scores, labels, weights=weights, iou_thr=0.55, skip_box_thr=0.0)
    got = weighted_boxes_fusion([det(*p) for p in zip(boxes, scores, labels, strict=True)], weights)
    mine, theirs = rows(got.xyxy, got.confidence, got.class_id), rows(*want)
    assert mine.shape == theirs.shape and np.allclose(mine, theirs, atol=2e-4)


def rows(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fused boxes as comparable rows (label, score, x1, y1, x2, y2), in a fixed order."""
    table = np.column_stack(
        [np.asarray(labels, float).ravel(), np.asarray(scores, float).ravel(), np.asarray(boxes, float).reshape(-1, 4)]
    )
    return table[np.lexsort(table.T[::-1])]
