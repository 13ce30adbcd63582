"""Heads and thresholds: calibration against brute force, heads against hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from backend.learning.heads import box_iou, calibrate_threshold, fit_choice_head, greedy_matches


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]])
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    expected = np.array([[25 / 175, 1.0, 0.0], [0.0, 25 / 100, 0.0]])
    assert box_iou(a, b) == pytest.approx(expected)


def test_greedy_matching_takes_the_best_free_truth_in_score_order() -> None:
    # prediction 1 (0.9) goes first and takes truth 0 (IoU 0.7 beats 0.55); prediction 0 (0.6) then finds truth 0
    # taken and truth 1 at IoU 0; prediction 2 (0.3) reaches truth 1 only at 0.4 < 0.5.
    iou = np.array([[0.8, 0.0], [0.7, 0.55], [0.2, 0.4]])
    assert greedy_matches(np.array([0.6, 0.9, 0.3]), iou).tolist() == [False, True, False]


def brute_force(images, truths, floor):
    """F1 at every candidate threshold, matching from scratch each time; the best (highest threshold on ties)."""
    candidates = sorted({float(s) for scores, _, _ in images for s in scores}, reverse=True)
    total = sum(truths)
    best_f1, best_kept = -1.0, None
    for t in candidates:
        tp = kept = 0
        for scores, boxes, truth_boxes in images:
            keep = scores >= t
            kept += int(keep.sum())
            tp += int(greedy_matches(scores[keep], box_iou(boxes[keep], truth_boxes)).sum())
        f1 = 2 * tp / (kept + total)
        if f1 > best_f1 + 1e-12:
            best_f1, best_kept = f1, t
    return best_f1, best_kept


@st.composite
def calibration_problems(draw: st.DrawFn):
    images = []
    for _ in range(draw(st.integers(1, 5))):
        n_truth = draw(st.integers(0, 4))
        truth = np.array([[x, 0, x + 10, 10] for x in range(0, 20 * n_truth, 20)], dtype=float).reshape(-1, 4)
        n_pred = draw(st.integers(0, 6))
        offsets = draw(st.lists(st.sampled_from([0, 1, 3, 6, 9, 40]), min_size=n_pred, max_size=n_pred))
        slots = draw(st.lists(st.integers(0, 4), min_size=n_pred, max_size=n_pred))
        boxes = np.array(
            [[20 * s + o, 0, 20 * s + o + 10, 10] for s, o in zip(slots, offsets, strict=True)], dtype=float
        )
        scores = np.array(draw(st.lists(st.sampled_from([0.1, 0.2, 0.35, 0.5, 0.7, 0.9]), min_size=n_pred,
                                        max_size=n_pred)), dtype=float)  # fmt: skip
        images.append((scores, boxes.reshape(-1, 4), truth))
    return images


@settings(max_examples=300, deadline=None)
@given(problem=calibration_problems())
def test_calibration_finds_the_same_f1_as_brute_force(problem) -> None:
    truths = [len(t) for _, _, t in problem]
    floor = 0.05
    matched = [(s, greedy_matches(s, box_iou(b, t))) for s, b, t in problem]
    curve = calibrate_threshold(matched, truths, floor=floor)
    best_f1, best_t = brute_force(problem, truths, floor)
    if sum(truths) == 0 or best_f1 <= 0:
        assert curve.best is None
        return
    assert curve.f1.max() == pytest.approx(best_f1)
    # the chosen threshold keeps exactly the predictions brute force keeps at its best (highest) threshold
    all_scores = np.concatenate([s for s, _, _ in problem])
    assert set(all_scores[all_scores >= curve.best]) == set(all_scores[all_scores >= best_t])
    below = all_scores[all_scores < best_t]
    assert curve.best == pytest.approx((best_t + (below.max() if len(below) else floor)) / 2)


def test_a_label_the_model_never_finds_keeps_its_default() -> None:
    scores = np.array([0.9, 0.8])
    curve = calibrate_threshold([(scores, np.array([False, False]))], [3], floor=0.05)
    assert curve.best is None


def test_a_head_with_a_strong_prior_answers_like_the_zero_shot_model() -> None:
    rng = np.random.default_rng(0)
    prior_w = rng.normal(size=(3, 8)) * 5
    x = rng.normal(size=(6, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    targets = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    head = fit_choice_head(x, targets, calibration="softmax", prior=(prior_w, np.zeros(3)), prior_weight=1e6)
    assert head.probabilities(x) == pytest.approx(softmax(x @ prior_w.T, axis=1), abs=1e-3)


def test_examples_move_a_head_away_from_a_wrong_prior_and_leave_a_right_one_alone() -> None:
    rng = np.random.default_rng(1)
    centers = np.eye(4, 16)  # four well separated classes
    wrong = rng.normal(size=(4, 16))  # a prior unrelated to them (like a random-weight text tower)
    wrong = wrong / np.linalg.norm(wrong, axis=1, keepdims=True) * 20
    right = centers * 20

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(4), n)
        x = centers[y] + 0.3 * rng.normal(size=(len(y), 16))
        return x / np.linalg.norm(x, axis=1, keepdims=True), y

    test_x, test_y = sample(100)

    def accuracy(weights: np.ndarray) -> float:
        return float((np.argmax(test_x @ weights.T, axis=1) == test_y).mean())

    learned_wrong, learned_right = [], []
    for k in (1, 5, 20):
        x, y = sample(k)
        for prior, out in ((wrong, learned_wrong), (right, learned_right)):
            head = fit_choice_head(x, np.eye(4)[y], calibration="softmax", prior=(prior, np.zeros(4)))
            out.append(float((head.probabilities(test_x).argmax(axis=1) == test_y).mean()))
    assert accuracy(wrong) < 0.5 and accuracy(right) > 0.95
    assert accuracy(wrong) < learned_wrong[0] < learned_wrong[1] < learned_wrong[2] and learned_wrong[2] > 0.8
    assert min(learned_right) > 0.95  # examples that agree with a good prior do not spoil it


def test_without_a_prior_labels_nobody_annotated_are_never_chosen() -> None:
    x = np.eye(3, 5)
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=float)  # no example of label 2
    head = fit_choice_head(x, targets, calibration="softmax", prior=None)
    probabilities = head.probabilities(np.eye(5))
    assert head.usable.tolist() == [True, True, False]
    assert (probabilities[:, 2] == 0).all() and probabilities.sum(axis=1) == pytest.approx(1.0)
    assert probabilities[0].argmax() == 0 and probabilities[1].argmax() == 1


def test_several_choices_are_independent_with_sigmoid_heads() -> None:
    x = np.array([[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0]])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    targets = np.array([[1, 0], [0, 1], [1, 1]], dtype=float)
    head = fit_choice_head(x, targets, calibration="sigmoid", prior=None)
    probabilities = head.probabilities(x)
    assert (probabilities[2] > 0.5).all() and probabilities[0, 1] < 0.5 and probabilities[1, 0] < 0.5
