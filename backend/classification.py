"""Classifier answers -> a ``Choices`` control's region: prompts to labels, then one choice or several."""

from __future__ import annotations

from typing import Any

import numpy as np
import supervision as sv

from backend.encode import choices_region
from backend.plan import ClassificationPost, TargetPlan
from model_adapters.classification import CALIBRATION

__all__ = ["choice_regions", "label_scores"]


def label_scores(answer: sv.Detections, plan: TargetPlan) -> np.ndarray:
    """One score per label from the per-prompt rows.

    Softmax probabilities of a label's prompts add up (they are alternative names of one class); independent
    (sigmoid) scores take the best prompt.
    """
    scores = np.zeros(len(plan.target.labels), dtype=np.float64)
    owners = np.asarray(plan.prompt_labels)[answer.class_id]
    confidence = answer.confidence.astype(np.float64)
    if answer.metadata.get(CALIBRATION) == "sigmoid":
        np.maximum.at(scores, owners, confidence)
    else:
        np.add.at(scores, owners, confidence)
    return np.clip(scores, 0.0, 1.0)


def choice_regions(answer: sv.Detections, plan: TargetPlan) -> list[dict[str, Any]]:
    """The control's choices for one image.

    ``choice="single"`` (Label Studio's default) takes the best label, scored by its probability, so sorting by
    score surfaces uncertain images. ``choice="multiple"`` keeps each label whose score reaches its threshold,
    scored by the weakest kept label; no region when none does.
    """
    post: ClassificationPost = plan.post
    scores = label_scores(answer, plan)
    labels = plan.target.labels
    if plan.target.attrs.get("choice", "single") == "multiple":
        kept = [
            i for i, label in enumerate(labels) if scores[i] >= post.label_thresholds.get(label, post.score_threshold)
        ]
        if not kept:
            return []
        chosen, score = [labels[i] for i in kept], float(scores[kept].min())
    else:
        best = int(np.argmax(scores))
        chosen, score = [labels[best]], float(scores[best])
    return [choices_region(chosen, score, from_name=plan.target.control, to_name=plan.target.to_name)]
