"""A plan + a learned state -> the learned plan that predictions are served with, under ``<base>-fit<N>``.

``Choices`` controls with a head answer through it (their model, or the embedder the head was fitted on, embeds
each image; the head scores it). Box and mask controls get their calibrated per-label thresholds (the model is
asked down to the lowest of them; labels without a calibrated one keep the configured threshold) and, for
OWL-ViT/OWLv2, the learned image-guided queries after the text prompts. Everything else is the base plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv

from backend.learning.heads import ChoiceHead
from backend.learning.versions import ControlState, LearnedState
from backend.plan import Plan, TargetPlan
from model_adapters.base import ModelSpec, QueryEmbedding
from model_adapters.classification import classification_detections

__all__ = ["LearnedHead", "learned_plan"]


@dataclass(frozen=True, eq=False)
class LearnedHead:
    """A fitted head over a control's labels, answering like a zero-shot classifier with one prompt per label."""

    head: ChoiceHead
    labels: tuple[str, ...]

    def answer(self, embeddings: np.ndarray, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """One row per label per image: the head's probability, in its calibration."""
        probabilities = self.head.probabilities(embeddings)
        return [
            classification_detections(p, image, self.labels, self.head.calibration)  # type: ignore[arg-type]
            for p, image in zip(probabilities, images, strict=True)
        ]


def learned_plan(plan: Plan, state: LearnedState, version: str) -> Plan:
    """The plan with each control's learned state applied, served under ``version``."""
    targets = tuple(
        _apply(target, state.controls[target.target.control]) if target.target.control in state.controls else target
        for target in plan.targets
    )
    return dataclasses.replace(plan, targets=targets, model_version=version)


def _apply(target: TargetPlan, control: ControlState) -> TargetPlan:
    if control.head is not None and control.embedder is not None:
        head = ChoiceHead(
            control.head["weights"], control.head["bias"], control.calibration or "softmax", control.head["usable"]
        )
        labels = target.target.labels
        spec = ModelSpec(control.embedder[0], control.embedder[1], target.spec.device, target.spec.dtype)
        return dataclasses.replace(
            target, spec=spec, prompts=labels, prompt_labels=tuple(range(len(labels))), examples=(),
            head=LearnedHead(head, labels),
        )  # fmt: skip
    if target.detector is not None:  # promptable segmenter: what is learned belongs to its detector
        return dataclasses.replace(target, detector=_scorer(target.detector, control))
    return _scorer(target, control)


def _scorer(target: TargetPlan, control: ControlState) -> TargetPlan:
    """Calibrated thresholds and learned queries on a box (or text-prompted mask) target."""
    changes: dict = {}
    configured = getattr(target.params, "score_threshold", None)
    if control.thresholds and configured is not None:
        thresholds = {label: control.thresholds.get(label, configured) for label in target.target.labels}
        changes["params"] = dataclasses.replace(target.params, score_threshold=min(thresholds.values()))
        changes["post"] = dataclasses.replace(target.post, label_thresholds=thresholds)
    if control.queries is not None and control.query_labels is not None and len(control.queries):
        changes["queries"] = tuple(
            QueryEmbedding(np.asarray(vector, dtype=np.float32), key=f"{control.control}#{i}")
            for i, vector in enumerate(control.queries)
        )
        changes["prompt_labels"] = (*target.prompt_labels, *(int(i) for i in control.query_labels))
    return dataclasses.replace(target, **changes)
