"""Detector answers -> a control's regions: prompts to labels, NMS, clipping, encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import supervision as sv

from backend.encode import detections_to_rectangles
from backend.plan import DetectionPost, TargetPlan
from model_adapters.base import CLASS_NAME_DATA_FIELD

__all__ = ["above_label_thresholds", "detection_regions", "finish_detections"]


def finish_detections(detections: sv.Detections, plan: TargetPlan, image_wh: tuple[int, int]) -> sv.Detections:
    """Map prompt ids to label ids and apply the task's post-processing.

    Several prompts of one label merge into that label; class-wise NMS then removes the duplicate boxes
    they produce for one object. A box whose best prompt is a negative query (label ``-1``, learned from boxes
    annotators deleted) is dropped. Boxes are clipped to the image and capped at ``max_detections``, best first.
    """
    post: DetectionPost = plan.post
    if len(detections) == 0:
        return detections
    labels = np.asarray(plan.prompt_labels)[detections.class_id]
    detections, labels = detections[labels >= 0], labels[labels >= 0]
    if len(detections) == 0:
        return detections
    width, height = image_wh
    out = sv.Detections(
        xyxy=np.clip(detections.xyxy, 0, [width, height, width, height]).astype(np.float32),
        confidence=detections.confidence,
        class_id=labels,
        data={CLASS_NAME_DATA_FIELD: np.asarray([plan.target.labels[i] for i in labels], dtype=object)},
    )
    area = (out.xyxy[:, 2] - out.xyxy[:, 0]) * (out.xyxy[:, 3] - out.xyxy[:, 1])
    out = out[area > 0]
    out = out[above_label_thresholds(out, plan.target.labels, post.label_thresholds)]
    if post.nms_threshold < 1.0:
        out = out.with_nms(threshold=post.nms_threshold, class_agnostic=False)
        if post.class_agnostic_nms:
            out = out.with_nms(threshold=post.nms_threshold, class_agnostic=True)
    order = np.argsort(-out.confidence, kind="stable")[: post.max_detections]
    return out[order]


def detection_regions(detections: sv.Detections, plan: TargetPlan, image_wh: tuple[int, int]) -> list[dict[str, Any]]:
    """Finished ``rectanglelabels`` regions for one image and one control."""
    return detections_to_rectangles(
        finish_detections(detections, plan, image_wh),
        plan.target.labels,
        image_wh=image_wh,
        from_name=plan.target.control,
        to_name=plan.target.to_name,
    )


def above_label_thresholds(found: sv.Detections, labels: tuple[str, ...], thresholds: dict[str, float]) -> np.ndarray:
    """Which detections reach their label's threshold (all, when no label has one)."""
    if not thresholds or len(found) == 0:
        return np.ones(len(found), dtype=bool)
    floors = np.asarray([thresholds.get(labels[i], 0.0) for i in found.class_id])
    return found.confidence >= floors
