"""Training examples + features -> what a fit learns: choice heads and calibrated score thresholds.

**Choice heads** are linear heads on frozen image embeddings, fitted as a MAP estimate: the loss is the heads'
cross-entropy on the examples plus a Gaussian prior that pulls the weights back to the zero-shot classifier itself
(the model's text embeddings, scale and bias, ``ContrastiveClassifier.text_prior``). Why this head: with no example
it *is* the zero-shot model; one or two examples move their label's weights only as far as the prior allows; with
many, the data outweighs the prior and it becomes a linear probe. A label nobody has annotated keeps its prior.
Embeddings without a text tower (DINOv2) have no prior: a weak ridge instead, and labels without an example are
never chosen. The head keeps the model's calibration: softmax heads (CLIP) are trained with cross-entropy (soft
targets for several choices), sigmoid heads (SigLIP, DINOv2 with several choices) with binary cross-entropy.

**Thresholds** are calibrated per label on the annotated images: the score threshold that maximises F1 against the
annotators' objects at IoU 0.5 (boxes) or mask IoU 0.5, with greedy matching in score order as detection
benchmarks do. Because a greedy match never changes when lower-scored boxes are added, one sorted pass gives F1 at
every threshold; ties go to the higher threshold (fewer boxes to delete). The threshold is set halfway between the
lowest score kept and the next one below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, softmax

__all__ = ["ChoiceHead", "ThresholdCurve", "box_iou", "calibrate_threshold", "fit_choice_head", "greedy_matches"]

# Strength of the pull back to the zero-shot prior (times ``learning.prior_weight``), and the ridge used without one.
PRIOR_STRENGTH = 0.03
RIDGE = 0.01


@dataclass(frozen=True)
class ChoiceHead:
    """``probabilities(x) = calibration(x @ weights.T + bias)``, with never-chosen labels at 0.

    Attributes:
        weights: ``(L, D)`` per label.
        bias: ``(L,)``.
        calibration: ``"softmax"`` (one label) or ``"sigmoid"`` (independent labels).
        usable: ``(L,)`` bool: labels the head may choose (all, with a prior; those with examples, without).
    """

    weights: np.ndarray
    bias: np.ndarray
    calibration: Literal["softmax", "sigmoid"]
    usable: np.ndarray

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, L)`` scores before calibration; unusable labels at ``-inf``."""
        logits = embeddings.astype(np.float64) @ self.weights.T + self.bias
        return np.where(self.usable, logits, -np.inf)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, L)`` probabilities in the head's calibration."""
        logits = self.logits(embeddings)
        return softmax(logits, axis=1) if self.calibration == "softmax" else expit(logits)


def fit_choice_head(
    embeddings: np.ndarray,
    targets: np.ndarray,
    *,
    calibration: Literal["softmax", "sigmoid"],
    prior: tuple[np.ndarray, np.ndarray] | None,
    prior_weight: float = 1.0,
) -> ChoiceHead:
    """Fit a head (see the module docstring).

    Args:
        embeddings: ``(N, D)`` L2-normalised image embeddings.
        targets: ``(N, L)`` 0/1: the labels chosen for each example.
        calibration: The head's output calibration.
        prior: ``(weights (L, D), bias (L,))`` of the zero-shot classifier, or ``None`` (no text tower).
        prior_weight: Multiplies ``PRIOR_STRENGTH``; 0 fits a plain (weakly ridged) linear probe.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    labels, dim = y.shape[1], x.shape[1]
    if prior is None:
        w0, b0 = np.zeros((labels, dim)), np.zeros(labels)
        usable = y.sum(axis=0) > 0
        strength = RIDGE
    else:
        w0, b0 = np.asarray(prior[0], dtype=np.float64), np.asarray(prior[1], dtype=np.float64).reshape(labels)
        usable = np.ones(labels, dtype=bool)
        strength = max(PRIOR_STRENGTH * prior_weight, RIDGE)
    if calibration == "softmax":
        y = y / np.maximum(y.sum(axis=1, keepdims=True), 1.0)  # several choices share the probability
    mask = np.where(usable, 0.0, -1e9)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        delta_w = theta[: labels * dim].reshape(labels, dim)
        delta_b = theta[labels * dim :]
        logits = x @ (w0 + delta_w).T + b0 + delta_b + mask
        if calibration == "softmax":
            value = -(y * log_softmax(logits, axis=1)).sum()
            grad_logits = softmax(logits, axis=1) - y
        else:
            value = (np.logaddexp(0.0, logits) - y * logits).sum()
            grad_logits = expit(logits) - y
        value += 0.5 * strength * (theta @ theta)
        grad = np.concatenate([(grad_logits.T @ x).ravel(), grad_logits.sum(axis=0)]) + strength * theta
        return float(value), grad

    result = minimize(loss, np.zeros(labels * dim + labels), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    theta = result.x
    weights = w0 + theta[: labels * dim].reshape(labels, dim)
    return ChoiceHead(weights, b0 + theta[labels * dim :], calibration, usable)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of xyxy boxes."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_matches(scores: np.ndarray, iou: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Which predictions match a truth: in descending score order, each takes its best free truth at IoU >= 0.5.

    Args:
        scores: ``(P,)`` prediction scores.
        iou: ``(P, T)`` IoU of each prediction with each truth.
        threshold: The IoU a match needs.
    """
    matched = np.zeros(len(scores), dtype=bool)
    free = np.ones(iou.shape[1], dtype=bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        candidates = np.where(free & (iou[i] >= threshold), iou[i], -1.0)
        if candidates.size and candidates.max() >= threshold:
            j = int(candidates.argmax())
            free[j] = False
            matched[i] = True
    return matched


@dataclass(frozen=True)
class ThresholdCurve:
    """F1 against the annotations at each threshold worth trying, and the one chosen."""

    thresholds: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    best: float | None
    truths: int


def calibrate_threshold(
    images: Sequence[tuple[np.ndarray, np.ndarray]], truths: Sequence[int], *, floor: float
) -> ThresholdCurve:
    """The F1-best score threshold of one label over annotated images.

    Args:
        images: Per image, ``(scores (P,), matched (P,))`` of the label's predictions at ``floor`` (``matched`` from
            ``greedy_matches`` against that image's truths of the label).
        truths: Per image, how many objects of the label the annotators drew.
        floor: The threshold the predictions were made at (the lowest one considered).
    """
    scores = np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in images]) if images else np.zeros(0)
    matched = np.concatenate([np.asarray(m, dtype=bool) for _, m in images]) if images else np.zeros(0, bool)
    total = int(sum(truths))
    order = np.argsort(-scores, kind="stable")
    scores, matched = scores[order], matched[order]
    kept = np.arange(1, len(scores) + 1)
    true_positives = np.cumsum(matched)
    precision = true_positives / np.maximum(kept, 1)
    recall = true_positives / max(total, 1)
    f1 = 2 * true_positives / np.maximum(kept + total, 1)
    # Only cuts between distinct scores are thresholds: keep the last index of each run of equal scores.
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    cuts = np.nonzero(last)[0]
    below = np.r_[scores[1:], floor][cuts]
    thresholds = (scores[cuts] + np.minimum(below, scores[cuts])) / 2
    curve_f1 = f1[cuts]
    best = None
    if total and len(cuts) and true_positives[-1] > 0:
        top = curve_f1.max()
        best = float(thresholds[np.nonzero(curve_f1 == top)[0][0]])  # the first (highest) of the best cuts
    return ThresholdCurve(thresholds, curve_f1, precision[cuts], recall[cuts], best, total)
