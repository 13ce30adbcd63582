"""The plan a project is served with -> its score threshold per control and label, marked on the report's curves.

A learned version (``backend.learning``) serves per-label calibrated thresholds; a label whose served threshold
differs from the configured one (the base plan's: ``model_score_threshold``, ``extra_params`` or the server default)
is marked "calibrated", any other "configured". Targets without a score threshold (classification) have no mark.
"""

from __future__ import annotations

from typing import Any

from backend.plan import Plan, TargetPlan

__all__ = ["project_thresholds"]


def project_thresholds(base: Plan, served: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    """``(control, label) -> {"threshold": t, "source": "calibrated" | "configured"}`` for every thresholded label."""
    configured = {key: t for target in base.targets for key, t in _thresholds(target).items()}
    out = {}
    for target in served.targets:
        for key, threshold in _thresholds(target).items():
            source = "configured" if configured.get(key) == threshold else "calibrated"
            out[key] = {"threshold": round(threshold, 6), "source": source}
    return out


def _thresholds(target: TargetPlan) -> dict[tuple[str, str], float]:
    scorer = target.detector or target  # a promptable segmenter's boxes are cut by its detector's threshold
    floor = getattr(scorer.params, "score_threshold", None)
    if not isinstance(floor, int | float) or scorer.head is not None:
        return {}
    per_label = getattr(scorer.post, "label_thresholds", None) or {}
    control = target.target.control
    return {(control, label): float(per_label.get(label, floor)) for label in target.target.labels}
