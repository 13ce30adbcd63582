"""The runner's answers for one control on one image -> the plain arrays the strategies rank by.

Regions keep only the chosen label's score; margin and entropy need every label's, and close_to_threshold the
threshold each box had to pass, and disagreement how many ensemble members found each box. So the runner hands
over, per control, what it decided from: ``BoxEvidence`` for boxes and masks, ``ChoiceEvidence`` for ``Choices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import supervision as sv

from backend.plan import TargetPlan
from backend.refine.fusion import MEMBERS_FIELD

__all__ = ["BoxEvidence", "ChoiceEvidence", "Evidence", "box_evidence", "choice_evidence"]


@dataclass(frozen=True)
class BoxEvidence:
    """A box or mask control's final objects on one image.

    Attributes:
        scores: ``(N,)`` final scores.
        thresholds: ``(N,)`` the score each object had to reach (its label's).
        members: ``(N,)`` how many ensemble members found each object, or ``None`` without an ensemble.
        ensemble: How many members the ensemble has (0 without one).
    """

    scores: np.ndarray
    thresholds: np.ndarray
    members: np.ndarray | None = None
    ensemble: int = 0


@dataclass(frozen=True)
class ChoiceEvidence:
    """A ``Choices`` control's score per label on one image.

    Attributes:
        scores: ``(L,)`` per label, in [0, 1] (softmax probabilities or independent sigmoid scores).
        thresholds: ``(L,)`` per label: what a label needs to be chosen with ``choice="multiple"``.
        multiple: ``choice="multiple"``: each label is a yes/no decision of its own.
    """

    scores: np.ndarray
    thresholds: np.ndarray
    multiple: bool = False


Evidence = BoxEvidence | ChoiceEvidence


def box_evidence(found: sv.Detections, plan: TargetPlan) -> BoxEvidence:
    """Evidence of a detection (or text-prompted segmentation) target's final objects.

    Args:
        found: The objects after thresholds and NMS: ``confidence``, ``class_id`` = label index, and for an ensemble
            ``data[MEMBERS_FIELD]``.
        plan: The ``TargetPlan`` that scored them (the detector's, for a promptable segmenter).
    """
    labels = plan.target.labels
    post = plan.post
    members = plan.members
    # An ensemble's fused scores meet only the label thresholds; a single model also its own score_threshold.
    configured = 0.0 if members else float(getattr(plan.params, "score_threshold", 0.0) or 0.0)
    per_label = getattr(post, "label_thresholds", {})
    class_ids = np.asarray(found.class_id if found.class_id is not None else np.zeros(len(found)), dtype=int)
    thresholds = np.asarray([per_label.get(labels[i], configured) for i in class_ids], dtype=np.float64)
    scores = np.asarray(found.confidence if found.confidence is not None else np.ones(len(found)), dtype=np.float64)
    agreement = found.data.get(MEMBERS_FIELD) if members else None
    return BoxEvidence(
        np.clip(np.nan_to_num(scores), 0.0, 1.0),
        thresholds,
        None if agreement is None else np.asarray(agreement, dtype=np.float64),
        len(members),
    )


def choice_evidence(scores: np.ndarray, plan: TargetPlan) -> ChoiceEvidence:
    """Evidence of a ``Choices`` target from its per-label scores (``backend.classification.label_scores``)."""
    target = plan.target
    post = plan.post
    thresholds = np.asarray([post.label_thresholds.get(label, post.score_threshold) for label in target.labels])
    multiple = target.attrs.get("choice", "single") == "multiple"
    return ChoiceEvidence(np.asarray(scores, dtype=np.float64), thresholds.astype(np.float64), multiple)
