"""Several detectors' boxes -> one set per label, by weighted boxes fusion (Solovyev et al., 2019).

Why fusion rather than NMS: NMS keeps one member's box and drops the others' evidence; fusion averages the
coordinates of boxes that agree (weighted by confidence) and scores a fused box by how many members found it, so a
box one of three detectors invents scores a third of one all three agree on. Own implementation (per label, numpy),
checked against the reference implementation (``ensemble-boxes``) in the tests: that package is unmaintained and
works on normalised lists; this one works on ``Detections`` in pixels and keeps which members agreed.

Per label: boxes of all members, their score times the member's weight, in descending order; each joins the first
fused box it overlaps with IoU above ``iou_threshold`` (the fused box is recomputed as the score-weighted mean of its
boxes' coordinates) or starts a new one. The fused score is the mean weighted score of its boxes, times
``min(members, boxes) / sum(weights)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

__all__ = ["MEMBERS_FIELD", "Member", "weighted_boxes_fusion"]

MEMBERS_FIELD = "members"  # per fused box: how many members found it (their agreement, for active learning)


@dataclass(frozen=True)
class Member:
    """One detector of an ensemble: its ``TargetPlan`` (model, knobs, threshold) and its weight in the fusion."""

    plan: Any
    weight: float = 1.0


def weighted_boxes_fusion(
    members: Sequence[sv.Detections], weights: Sequence[float], iou_threshold: float = 0.55
) -> sv.Detections:
    """Fuse members' detections (``class_id`` = label index) into one ``Detections``.

    Args:
        members: One answer per detector, in the same pixel frame.
        weights: Per member; scores are multiplied by it.
        iou_threshold: Overlap above which a box joins a fused box of its label.
    """
    boxes = [m.xyxy.astype(np.float64) for m in members if len(m)]
    if not boxes:
        return _detections([], [], [], [])
    xyxy = np.concatenate(boxes)
    member = np.concatenate([np.full(len(m), i) for i, m in enumerate(members) if len(m)])
    score = np.concatenate([m.confidence.astype(np.float64) * weights[i] for i, m in enumerate(members) if len(m)])
    label = np.concatenate([m.class_id for m in members if len(m)])
    fused_boxes, fused_scores, fused_labels, agreement = [], [], [], []
    for value in np.unique(label):
        mine = np.nonzero(label == value)[0]
        order = mine[np.argsort(-score[mine], kind="stable")]
        clusters: list[list[int]] = []
        fused = np.zeros((0, 4))
        for i in order:
            if len(fused):
                overlap = _iou(fused, xyxy[i])
                best = int(overlap.argmax())
                if overlap[best] > iou_threshold:
                    clusters[best].append(i)
                    fused[best] = _mean_box(xyxy[clusters[best]], score[clusters[best]])
                    continue
            clusters.append([i])
            fused = np.vstack([fused, xyxy[i]])
        for cluster, box in zip(clusters, fused, strict=True):
            fused_boxes.append(box)
            fused_scores.append(score[cluster].mean() * min(len(members), len(cluster)) / float(np.sum(weights)))
            fused_labels.append(value)
            agreement.append(len(set(member[cluster].tolist())))
    return _detections(fused_boxes, fused_scores, fused_labels, agreement)


def _detections(boxes: list, scores: list, labels: list, agreement: list) -> sv.Detections:
    return sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(scores, dtype=np.float32),
        class_id=np.asarray(labels, dtype=int),
        data={MEMBERS_FIELD: np.asarray(agreement, dtype=int)},
    )


def _mean_box(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return (boxes * scores[:, None]).sum(axis=0) / scores.sum()


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    top_left = np.maximum(boxes[:, :2], box[:2])
    bottom_right = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    union = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(box[2:] - box[:2]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
