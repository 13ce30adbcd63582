"""Detector answers -> a control's regions: prompts to labels, negatives, thresholds, NMS, clipping, encoding.

Two steps, so the optional stages of ``backend.refine`` (tile merging, fusion, verification) fit between them:
``labelled`` turns prompt ids into label ids (dropping what a negative prompt vetoes and what lies outside the
image) and ``settled`` applies the per-label thresholds, NMS and the cap to the final scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import supervision as sv

from backend.encode import detections_to_rectangles
from backend.plan import DetectionPost, TargetPlan
from backend.refine.negatives import vetoed
from model_adapters.base import CLASS_NAME_DATA_FIELD

__all__ = ["above_label_thresholds", "detection_regions", "finish_detections", "labelled", "settled", "suppressed"]


def finish_detections(detections: sv.Detections, plan: TargetPlan, image_wh: tuple[int, int]) -> sv.Detections:
    """A detector's answer for one image -> the control's final boxes (``labelled``, then ``settled``)."""
    return settled(labelled(detections, plan, image_wh), plan)


def labelled(detections: sv.Detections, plan: TargetPlan, image_wh: tuple[int, int]) -> sv.Detections:
    """Map prompt ids to label ids; drop what a negative vetoes; clip to the image.

    Several prompts of one label merge into that label. A box whose best prompt is a negative (a negative prompt
    of the settings, or a negative query learned from boxes annotators deleted: label ``-1``) is dropped, and so is
    a box a negative prompt's box overlaps (``backend.refine.negatives``). Boxes are clipped to the image; empty
    ones are dropped.
    """
    if len(detections) == 0:
        return _empty()
    labels = np.asarray(plan.prompt_labels)[detections.class_id]
    keep = labels >= 0
    if plan.negatives is not None:
        keep &= ~vetoed(detections, labels, plan.negatives)
    detections, labels = detections[keep], labels[keep]
    if len(detections) == 0:
        return _empty()
    width, height = image_wh
    out = sv.Detections(
        xyxy=np.clip(detections.xyxy, 0, [width, height, width, height]).astype(np.float32),
        confidence=detections.confidence,
        class_id=labels,
        data={CLASS_NAME_DATA_FIELD: np.asarray([plan.target.labels[i] for i in labels], dtype=object)},
    )
    area = (out.xyxy[:, 2] - out.xyxy[:, 0]) * (out.xyxy[:, 3] - out.xyxy[:, 1])
    return out[area > 0]


def settled(found: sv.Detections, plan: TargetPlan) -> sv.Detections:
    """Labelled boxes with their final scores -> those above their label's threshold, NMS'd, best first, capped."""
    post: DetectionPost = plan.post
    out = found[above_label_thresholds(found, plan.target.labels, post.label_thresholds)]
    out = suppressed(out, post)
    order = np.argsort(-out.confidence, kind="stable")[: post.max_detections]
    return out[order]


def suppressed(found: sv.Detections, post: DetectionPost) -> sv.Detections:
    """Class-wise NMS (the duplicates several prompts of one label produce), then class-agnostic NMS if asked."""
    if post.nms_threshold >= 1.0 or len(found) == 0:
        return found
    out = found.with_nms(threshold=post.nms_threshold, class_agnostic=False)
    if post.class_agnostic_nms:
        out = out.with_nms(threshold=post.nms_threshold, class_agnostic=True)
    return out


def detection_regions(found: sv.Detections, plan: TargetPlan, image_wh: tuple[int, int]) -> list[dict[str, Any]]:
    """Finished boxes (see ``finish_detections``) -> ``rectanglelabels`` regions for one image and one control."""
    return detections_to_rectangles(
        found, plan.target.labels, image_wh=image_wh, from_name=plan.target.control, to_name=plan.target.to_name
    )


def above_label_thresholds(found: sv.Detections, labels: tuple[str, ...], thresholds: dict[str, float]) -> np.ndarray:
    """Which detections reach their label's threshold (all, when no label has one)."""
    if not thresholds or len(found) == 0:
        return np.ones(len(found), dtype=bool)
    floors = np.asarray([thresholds.get(labels[i], 0.0) for i in found.class_id])
    return found.confidence >= floors


def _empty() -> sv.Detections:
    return sv.Detections(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        confidence=np.zeros(0, dtype=np.float32),
        class_id=np.zeros(0, dtype=int),
        data={CLASS_NAME_DATA_FIELD: np.asarray([], dtype=object)},
    )
