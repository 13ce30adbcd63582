"""Targets + settings -> a plan: which model serves each target, with which knobs, under which version.

Settings come in layers, lowest first: the adapter's own defaults, ``PRELABEL_DEFAULTS`` (server env), the
control's attributes (``model_score_threshold``), the project's ``extra_params`` section for the task, and
finally ``extra_params.controls.<control name>``. The README documents the schema; in short::

    {"detection": {"model": "grounding_dino", "score_threshold": 0.3, "nms_threshold": 0.5},
     "prompts": {"Car": ["car", "truck"]},
     "controls": {"label": {"model": "owlv2"}}}

The detection section may also name the stages of ``backend.refine``: ``models`` (an ensemble, each member a
detection section of its own plus a ``weight``), ``verify`` (a classifier that checks each box's crop) and
``tiling``; top-level (or per control) ``negatives`` name prompts a label's boxes must not match.

The model version is a hash of everything that changes predictions, so it is the same in ``/setup`` and in
``/predict``, across restarts and processes, and changes when the settings do.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from backend.errors import ProjectSettingsError
from backend.label_config import Target, parse_targets
from backend.prompts import LABEL_MAPS, ExampleRef, check_label_maps, examples_for, negatives_for, prompts_for
from backend.ranking.settings import RankingSettings, ranking_settings
from backend.refine.fusion import Member
from backend.refine.negatives import Negatives
from backend.refine.tiling import AUTO_ABOVE, Tiling
from backend.refine.verify import Verification
from backend.request_body import MAX_DEPTH, check_json
from model_adapters.base import ModelSpec, QueryEmbedding, SettingsError, Task, make_params, public_params
from model_adapters.registry import UnknownAdapterError, available_adapters, resolve_adapter

__all__ = [
    "DEFAULT_MODELS",
    "SECTION_TASKS",
    "ClassificationPost",
    "DetectionPost",
    "InteractivePlan",
    "Plan",
    "SegmentationPost",
    "TargetPlan",
    "build_plan",
    "check_server_defaults",
    "parse_extra_params",
]

# Settings sections: the task their models do, and the model used when nothing says otherwise.
SECTION_TASKS: Mapping[str, Task] = {
    "detection": Task.DETECTION,
    "classification": Task.CLASSIFICATION,
    "segmentation": Task.SEGMENTATION,
    "interactive": Task.SEGMENTATION,
}
DEFAULT_MODELS: Mapping[str, str] = {
    "detection": "grounding_dino",
    "classification": "clip",
    "segmentation": "sam",
    "interactive": "sam",
}
_LOAD_KEYS = ("model", "model_id", "device", "dtype")
_CONTROL_ATTRS = {"model_score_threshold": "score_threshold"}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_MASK_CONTROLS = ("BrushLabels", "PolygonLabels")  # preferred order for interactive answers
# "learning": backend.learning; "active_learning": backend.ranking
_TOP_KEYS = frozenset({*SECTION_TASKS, *LABEL_MAPS, "controls", "learning", "active_learning"})
_REFINE_KEYS = ("models", "verify", "tiling")  # detection stages of backend.refine
_PROBE_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels></View>'
)


@dataclass(frozen=True)
class DetectionPost:
    """What the server does with a detector's boxes, whatever the model.

    Attributes:
        nms_threshold: IoU above which a lower-scored box of the same label is dropped (1 disables).
        class_agnostic_nms: Also suppress overlapping boxes of different labels.
        max_detections: Keep at most this many boxes per image and control, best first.
        label_thresholds: Per-label score thresholds (learning calibrates them); a box below its label's is dropped.
        negative_iou: Overlap with a negative prompt's box above which a label's box is dropped.
        fusion_iou: With an ensemble (``models``): overlap above which members' boxes of one label are one object.
    """

    nms_threshold: float = 0.5
    class_agnostic_nms: bool = False
    max_detections: int = 100
    label_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    negative_iou: float = 0.5
    fusion_iou: float = 0.55

    def __post_init__(self) -> None:
        _in_range("nms_threshold", self.nms_threshold, 0.0, 1.0)
        _in_range("max_detections", self.max_detections, 1, 100_000)
        _in_range("negative_iou", self.negative_iou, 0.0, 1.0)
        _in_range("fusion_iou", self.fusion_iou, 0.0, 1.0)
        for label, threshold in self.label_thresholds.items():
            _in_range(f"label_thresholds.{label}", threshold, 0.0, 1.0)


@dataclass(frozen=True)
class ClassificationPost:
    """How a classifier's scores become choices.

    Attributes:
        score_threshold: With ``choice="multiple"``, keep every label whose score reaches this.
        label_thresholds: Per-label thresholds overriding ``score_threshold``.
    """

    score_threshold: float = 0.5
    label_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, threshold in {"score_threshold": self.score_threshold, **self.label_thresholds}.items():
            _in_range(label, threshold, 0.0, 1.0)


@dataclass(frozen=True)
class SegmentationPost:
    """How masks become regions.

    Attributes:
        polygon_tolerance: Polygon simplification (Douglas-Peucker), in pixels; 0 keeps every contour point.
        min_area: Mask parts smaller than this many pixels are dropped.
        polygon_parts: ``"largest"`` (one polygon per object: its largest part) or ``"all"`` (one polygon region
            per part). Holes are filled: Label Studio polygons cannot have holes (use brushes for those).
        nms_threshold: Mask IoU above which a lower-scored mask of the same label is dropped (1 disables).
        max_detections: At most this many objects per image and control, best first.
        label_thresholds: Per-label score thresholds of a text-prompted segmenter (learning calibrates them).
    """

    polygon_tolerance: float = 1.0
    min_area: int = 16
    polygon_parts: Literal["largest", "all"] = "largest"
    nms_threshold: float = 0.5
    max_detections: int = 100
    label_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _in_range("polygon_tolerance", self.polygon_tolerance, 0.0, 1000.0)
        _in_range("min_area", self.min_area, 0, 10**9)
        _in_range("nms_threshold", self.nms_threshold, 0.0, 1.0)
        _in_range("max_detections", self.max_detections, 1, 100_000)
        for label, threshold in self.label_thresholds.items():
            _in_range(f"label_thresholds.{label}", threshold, 0.0, 1.0)


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value!r}")


_POST: Mapping[str, type] = {
    "detection": DetectionPost,
    "classification": ClassificationPost,
    "segmentation": SegmentationPost,
    "interactive": SegmentationPost,
}


@dataclass(frozen=True)
class TargetPlan:
    """How one target is served.

    Attributes:
        target: The control and image.
        spec: The model to load (shared by every target and project with an equal spec).
        params: The adapter's ``Params`` instance.
        post: The task's post-processing settings (e.g. ``DetectionPost``).
        prompts: Texts sent to the model.
        prompt_labels: Label index (in ``target.labels``) of each prompt, then of each example, then of each query.
        examples: Example boxes sent after the texts, for adapters that accept them.
        detector: For segmentation with a promptable segmenter: where its boxes come from.
        queries: Few-shot query embeddings learned from annotations, sent after the examples.
        head: A learned classification head (``backend.learning.overlay.LearnedHead``): the adapter of ``spec``
            embeds the images and the head scores them, instead of the zero-shot prompts.
        negatives: Where the negative prompts sit among ``prompts`` and what each vetoes.
        members: An ensemble's detectors (``spec`` and ``params`` are then its first member's).
        verify: Crop verification of the boxes.
        tiling: Tiled inference for large images.
    """

    target: Target
    spec: ModelSpec
    params: Any
    post: Any
    prompts: tuple[str, ...]
    prompt_labels: tuple[int, ...]
    examples: tuple[ExampleRef, ...] = ()
    detector: TargetPlan | None = None
    queries: tuple[QueryEmbedding, ...] = ()
    head: Any = None
    negatives: Negatives | None = None
    members: tuple[Member, ...] = ()
    verify: Verification | None = None
    tiling: Tiling | None = None

    def model_specs(self) -> list[ModelSpec]:
        """The models this target's batch predictions call: its own (or its members'), its verifier, its detector's."""
        own = [m.plan.spec for m in self.members] or [self.spec]
        verifier = [self.verify.plan.spec] if self.verify else []
        return [*own, *verifier, *(self.detector.model_specs() if self.detector else [])]


@dataclass(frozen=True)
class InteractivePlan:
    """How the annotator's smart-tool regions on one image become a mask.

    Attributes:
        spec: The promptable segmenter.
        params: Its ``Params``.
        post: Mask-to-region settings.
        output: The ``BrushLabels`` or ``PolygonLabels`` control that receives the mask.
        prompt_controls: Smart controls whose regions are prompts (clicks or boxes).
    """

    spec: ModelSpec
    params: Any
    post: SegmentationPost
    output: Target
    prompt_controls: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Everything a project's predictions need, derived from its label config and settings."""

    targets: tuple[TargetPlan, ...]
    model_version: str
    interactive: tuple[InteractivePlan, ...] = ()
    ranking: RankingSettings = dataclasses.field(
        default_factory=RankingSettings
    )  # the score ranks by (backend.ranking)

    def batch_specs(self) -> list[ModelSpec]:
        """The models batch predictions need (segmentation detectors included), each once."""
        return list(dict.fromkeys(spec for t in self.targets for spec in t.model_specs()))

    def specs(self) -> list[ModelSpec]:
        """Every model of the plan, interactive segmenters included, each once."""
        return list(dict.fromkeys([*self.batch_specs(), *(i.spec for i in self.interactive)]))


def parse_extra_params(raw: Any) -> dict[str, Any]:
    """Accept ``extra_params`` as Label Studio sends it: null, a JSON string, or a JSON object.

    Raises:
        ProjectSettingsError: It is not JSON, not an object, or has unknown top-level keys.
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except RecursionError:
            raise ProjectSettingsError(f"extra_params nests deeper than {MAX_DEPTH} levels") from None
        except json.JSONDecodeError as exc:
            raise ProjectSettingsError(f"extra_params must be a JSON object: {exc}") from None
        check_json(raw, "extra_params")
    if not isinstance(raw, dict):
        raise ProjectSettingsError(f"extra_params must be a JSON object, got {type(raw).__name__}")
    _check_top(raw, "extra_params")
    return raw


def _check_top(settings: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - _TOP_KEYS)
    if unknown:
        hint = " (model settings go under a task section)" if unknown[0] in _LOAD_KEYS else ""
        raise ProjectSettingsError(
            f"{where}: unknown key {unknown[0]!r}{hint}; expected any of {', '.join(sorted(_TOP_KEYS))}, "
            f'e.g. {{"detection": {{"model": "owlv2", "score_threshold": 0.2}}}}'
        )
    for key in (*SECTION_TASKS, *LABEL_MAPS, "controls"):
        if key in settings and not isinstance(settings[key], dict):
            raise ProjectSettingsError(f"{where}.{key} must be a JSON object, got {settings[key]!r}")
    for name, control in settings.get("controls", {}).items():
        if not isinstance(control, dict):
            raise ProjectSettingsError(f"{where}.controls.{name} must be a JSON object, got {control!r}")


def build_plan(
    label_config: str, project: Mapping[str, Any], server_defaults: Mapping[str, Any], *, device: str, dtype: str
) -> Plan:
    """Plan a project's predictions (cached on the JSON of its inputs).

    Args:
        label_config: The project's ``<View>`` XML.
        project: Parsed ``extra_params`` (see ``parse_extra_params``).
        server_defaults: ``PRELABEL_DEFAULTS``, same schema as ``extra_params``.
        device: Server default device.
        dtype: Server default dtype.

    Raises:
        LabelConfigError: The config cannot be parsed.
        ProjectSettingsError: A setting is unknown or invalid; the message names it.
    """
    return _build_plan(label_config, _canonical(project), _canonical(server_defaults), device, dtype)


@functools.lru_cache(maxsize=256)
def _build_plan(label_config: str, project_json: str, defaults_json: str, device: str, dtype: str) -> Plan:
    project, defaults = json.loads(project_json), json.loads(defaults_json)
    _check_top(defaults, "PRELABEL_DEFAULTS")
    targets = parse_targets(label_config)
    check_label_maps(project, targets)
    unknown_controls = sorted(set(project.get("controls", {})) - {t.control for t in targets})
    if unknown_controls:
        known = ", ".join(sorted({t.control for t in targets})) or "none"
        raise ProjectSettingsError(
            f"extra_params.controls: no image control named {unknown_controls[0]!r}; known: {known}"
        )
    plans = []
    for target in targets:
        if target.task is None:
            continue
        plan = _plan_target(target, target.task.value, project, defaults, device, dtype)
        if target.task is Task.SEGMENTATION and getattr(resolve_adapter(plan.spec.adapter)[0], "promptable", False):
            detector = _plan_target(target, "detection", project, defaults, device, dtype, own_section=False)
            plan = dataclasses.replace(plan, detector=detector)
        plans.append(plan)
    interactive = _plan_interactive(targets, project, defaults, device, dtype)
    ranking = ranking_settings(project)
    return Plan(tuple(plans), _model_version(plans, ranking), interactive, ranking)


def _plan_interactive(
    targets: tuple[Target, ...], project: Mapping[str, Any], defaults: Mapping[str, Any], device: str, dtype: str
) -> tuple[InteractivePlan, ...]:
    """One plan per image that has smart controls and a mask control to answer them with."""
    plans = []
    for to_name in dict.fromkeys(t.to_name for t in targets):
        smart = [t for t in targets if t.to_name == to_name and (t.smart or t.task is None)]
        masks = [t for t in targets if t.to_name == to_name and t.control_type in _MASK_CONTROLS]
        if not smart or not masks:
            continue
        output = min(masks, key=lambda t: _MASK_CONTROLS.index(t.control_type))
        plan = _plan_target(output, "interactive", project, defaults, device, dtype)
        if not getattr(resolve_adapter(plan.spec.adapter)[0], "promptable", False):
            raise ProjectSettingsError(
                f"interactive: model {plan.spec.adapter!r} cannot take clicks or boxes; use sam, sam2 or segment_anything"
            )
        plans.append(InteractivePlan(plan.spec, plan.params, plan.post, output, tuple(t.control for t in smart)))
    return tuple(plans)


def _plan_target(
    target: Target,
    section: str,
    project: Mapping[str, Any],
    defaults: Mapping[str, Any],
    device: str,
    dtype: str,
    *,
    own_section: bool = True,
) -> TargetPlan:
    """Resolve a target's model and knobs from one settings section.

    ``own_section=False`` plans a helper model (the detector of a segmentation control): it follows the
    section without the control's overrides.
    """
    where = f"settings of control {target.control!r} ({target.control_type}, {section})"
    env_layer = dict(defaults.get(section, {}))
    attr_layer = {
        key: _number(target.attrs[attr], attr) for attr, key in _CONTROL_ATTRS.items() if attr in target.attrs
    }
    project_layer = dict(project.get(section, {}))
    if own_section:
        project_layer.update(project.get("controls", {}).get(target.control, {}))
    for key in LABEL_MAPS:
        project_layer.pop(key, None)
    merged = {"device": device, "dtype": dtype, **env_layer, **attr_layer, **project_layer}
    if SECTION_TASKS[section] is not Task.DETECTION:
        return _resolve(target, section, merged, set(project_layer), where, project)
    refine = {key: merged.pop(key) for key in _REFINE_KEYS if key in merged}
    if refine.get("models") is not None:
        plan = _ensemble(target, refine["models"], merged, set(project_layer) - set(_REFINE_KEYS), where, project)
    else:
        plan = _resolve(target, section, merged, set(project_layer) - set(_REFINE_KEYS), where, project)
    tiling = _tiling(refine.get("tiling"), where)
    verify = _verification(target, refine["verify"], merged, where, project) if refine.get("verify") else None
    return dataclasses.replace(plan, tiling=tiling, verify=verify)


def _resolve(
    target: Target, section: str, merged: dict[str, Any], given: set[str], where: str, project: Mapping[str, Any]
) -> TargetPlan:
    """One model's plan from its merged settings; a key in ``given`` (the user's) must be a knob it knows."""
    task = SECTION_TASKS[section]
    merged = dict(merged)
    for key in _LOAD_KEYS:
        if key in merged and (not isinstance(merged[key], str) or not merged[key].strip()):
            raise ProjectSettingsError(f'{where}: {key} must be a non-empty string like "owlv2", got {merged[key]!r}')
    model = merged.pop("model", DEFAULT_MODELS[section])
    try:
        adapter, default_id = resolve_adapter(model)
    except UnknownAdapterError as exc:
        raise ProjectSettingsError(f"{where}: {exc}") from None
    if adapter.task is not task and task not in adapter.other_tasks:
        raise ProjectSettingsError(f"{where}: model {model!r} does {adapter.task.value}, not {task.value}")
    model_id = str(merged.pop("model_id", default_id))
    if model_id.lower().startswith(("http://", "https://")) and model_id not in adapter.variants.values():
        published = ", ".join(v for v in adapter.variants.values() if v.startswith("http")) or "none"
        raise ProjectSettingsError(
            f"{where}: model_id {model_id!r} is a URL that is not a published checkpoint of {adapter.name} "
            f"({published}); download it on the server and give its path instead"
        )
    spec = ModelSpec(
        adapter=adapter.name,
        model_id=model_id,
        device=str(merged.pop("device")),
        dtype=str(merged.pop("dtype")),
    )
    _check_placement(spec, where)
    post_cls = _POST[section]
    post_keys = {f.name for f in dataclasses.fields(post_cls)}
    known = post_keys | {f.name for f in dataclasses.fields(adapter.Params)}
    # Server defaults and control attributes may carry knobs of another model: they apply where they fit.
    knobs = {k: v for k, v in merged.items() if k in known or k in given}
    unknown = sorted(set(knobs) - known)
    if unknown:
        maps = set(LABEL_MAPS) | set(_REFINE_KEYS) if task is Task.DETECTION else {"prompts"}
        accepted = ", ".join(sorted(known | set(_LOAD_KEYS) | maps))
        raise ProjectSettingsError(f"{where}: unknown setting {unknown[0]!r} for {model}; known: {accepted}")
    try:
        post = make_params(post_cls, {k: v for k, v in knobs.items() if k in post_keys}, owner=section)
        own = {k: v for k, v in knobs.items() if k not in post_keys}
        params = make_params(adapter.Params, own | ({"task": task.value} if adapter.other_tasks else {}), owner=model)
        adapter.check_settings(model_id, params)
    except SettingsError as exc:
        raise ProjectSettingsError(f"{where}: {exc}") from None
    prompts, prompt_labels = prompts_for(target, project)
    negatives = None
    if task is Task.DETECTION:
        texts, scopes = negatives_for(target, project)
        if texts:
            negatives = Negatives(len(prompts), scopes, post.negative_iou)
            prompts, prompt_labels = (*prompts, *texts), (*prompt_labels, *(-1 for _ in texts))
    examples = examples_for(target, project) if task is Task.DETECTION else ()
    if examples and not adapter.accepts_examples:
        takers = ", ".join(n for n in available_adapters() if "." not in n and resolve_adapter(n)[0].accepts_examples)
        raise ProjectSettingsError(f"{where}: model {model!r} does not take example boxes; models that do: {takers}")
    labels = prompt_labels + tuple(e.label for e in examples)
    return TargetPlan(target, spec, params, post, prompts, labels, examples, negatives=negatives)


def _ensemble(
    target: Target, raw: Any, merged: dict[str, Any], given: set[str], where: str, project: Mapping[str, Any]
) -> TargetPlan:
    """``detection.models``: each member is the section's settings overridden by its own entry, plus a weight.

    The section's knobs apply to each member that has them; the ensemble's own post-processing (thresholds per
    label, NMS, the cap, ``fusion_iou``) applies to the fused boxes.
    """
    like = '[{"model": "grounding_dino"}, {"model": "owlv2", "weight": 2, "score_threshold": 0.2}]'
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise ProjectSettingsError(f"{where}: models must be a list of detectors like {like}, got {raw!r}")
    base = {k: v for k, v in merged.items() if k not in ("model", "model_id")}
    members = []
    for i, entry in enumerate(raw):
        entry = dict(entry)
        weight = entry.pop("weight", 1.0)
        at = f"{where}, models[{i}]"
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 < weight <= 100:
            raise ProjectSettingsError(f"{at}: weight must be a number above 0 and at most 100, got {weight!r}")
        if not isinstance(entry.get("model"), str):
            raise ProjectSettingsError(f"{at}: each member names its model, like {like}")
        nested = sorted(set(entry) & {*_REFINE_KEYS, *LABEL_MAPS})
        if nested:
            raise ProjectSettingsError(f"{at}: {nested[0]!r} belongs to the detection section, not to a member")
        members.append(Member(_resolve(target, "detection", {**base, **entry}, set(entry), at, project), float(weight)))
    post_keys = {f.name for f in dataclasses.fields(DetectionPost)}
    knobs = post_keys | {f.name for m in members for f in dataclasses.fields(type(m.plan.params))}
    unknown = sorted(given - knobs - set(_LOAD_KEYS))
    if unknown:
        raise ProjectSettingsError(f"{where}: unknown setting {unknown[0]!r} for any member of the ensemble")
    try:
        post = make_params(DetectionPost, {k: v for k, v in merged.items() if k in post_keys}, owner="detection")
    except SettingsError as exc:
        raise ProjectSettingsError(f"{where}: {exc}") from None
    return dataclasses.replace(members[0].plan, post=post, members=tuple(members))


def _tiling(raw: Any, where: str) -> Tiling | None:
    """``detection.tiling``: ``"auto"`` (tiles of 1024 px, images above 2048 px), true, an object, or off."""
    if raw is None or raw is False:
        return None
    if raw == "auto":
        return Tiling(above=AUTO_ABOVE)
    if raw is True:
        return Tiling()
    if not isinstance(raw, dict):
        raise ProjectSettingsError(
            f'{where}: tiling must be "auto", true, false or like {{"tile": 1024, "overlap": 0.2}}'
        )
    try:
        return make_params(Tiling, raw, owner="tiling")
    except SettingsError as exc:
        raise ProjectSettingsError(f"{where}: {exc}") from None


def _verification(
    target: Target, raw: Any, merged: dict[str, Any], where: str, project: Mapping[str, Any]
) -> Verification:
    """``detection.verify``: a classifier section plus ``margin``, ``action`` and ``background`` prompts."""
    where = f"{where}, verify"
    if not isinstance(raw, dict):
        raise ProjectSettingsError(f'{where}: verify must be an object like {{"model": "siglip2", "action": "drop"}}')
    section = dict(raw)
    margin = section.pop("margin", 0.1)
    action = section.pop("action", "drop")
    background = section.pop("background", ["background"])
    if not isinstance(margin, int | float) or isinstance(margin, bool) or not 0 <= margin <= 1:
        raise ProjectSettingsError(f"{where}: margin must be a number between 0 and 1, got {margin!r}")
    if action not in ("drop", "relabel"):
        raise ProjectSettingsError(f'{where}: action must be "drop" or "relabel", got {action!r}')
    if not isinstance(background, list) or not background or not all(isinstance(b, str) and b for b in background):
        raise ProjectSettingsError(f'{where}: background must be a list of prompts like ["background"]')
    placement = {"device": merged["device"], "dtype": merged["dtype"]}
    classifier = _resolve(target, "classification", {**placement, **section}, set(section), where, project)
    classifier = dataclasses.replace(
        classifier,
        prompts=(*classifier.prompts, *background),
        prompt_labels=(*classifier.prompt_labels, *(len(target.labels) for _ in background)),
    )
    return Verification(classifier, float(margin), action)


def check_server_defaults(defaults: Mapping[str, Any]) -> None:
    """Validate ``PRELABEL_DEFAULTS`` at startup against the models its sections pick.

    Raises:
        ProjectSettingsError: An unknown key or bad value, named.
    """
    _check_top(defaults, "PRELABEL_DEFAULTS")
    for key, model in DEFAULT_MODELS.items():
        section = dict(defaults.get(key, {}))
        name = section.pop("model", model)
        where = f"PRELABEL_DEFAULTS.{key}"
        refine = {k: section.pop(k) for k in _REFINE_KEYS if k in section} if key == "detection" else {}
        if refine:  # a one-box project checks the stages, members and verifier the way a project's plan would
            _build_plan(_PROBE_CONFIG, "{}", _canonical(defaults), "auto", "auto")
        try:
            adapter, default_id = resolve_adapter(name)
            _check_placement(
                ModelSpec(adapter.name, default_id, section.pop("device", "auto"), section.pop("dtype", "auto")), where
            )
            section.pop("model_id", None)
            post_keys = {f.name for f in dataclasses.fields(_POST[key])}
            make_params(_POST[key], {k: v for k, v in section.items() if k in post_keys}, owner=key)
            make_params(adapter.Params, {k: v for k, v in section.items() if k not in post_keys}, owner=name)
        except (SettingsError, UnknownAdapterError) as exc:
            raise ProjectSettingsError(f"{where}: {exc}") from None


def _check_placement(spec: ModelSpec, where: str) -> None:
    if not _DEVICE.fullmatch(spec.device):
        raise ProjectSettingsError(f"{where}: device must be auto, cpu, cuda, cuda:N or mps; got {spec.device!r}")
    if spec.dtype not in _DTYPES:
        raise ProjectSettingsError(f"{where}: dtype must be one of {', '.join(_DTYPES)}; got {spec.dtype!r}")


def _number(raw: str, attr: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ProjectSettingsError(f'{attr} must be a number like "0.3", got {raw!r}') from None


def _model_version(plans: list[TargetPlan], ranking: RankingSettings) -> str:
    """Stable across processes: adapter names plus a hash of what changes batch predictions (not the device).

    The interactive model is left out: its answers are never stored, so changing it must not make Label Studio
    predict every task again. A ranking other than the default changes the stored scores, so it is in (the default
    is not, so versions made before ranking existed stay the same).
    """
    described: list[Any] = [_describe(p) for p in plans]
    if not described:
        return "prelabel-none"
    adapters = {spec.adapter for p in plans for spec in p.model_specs()}
    if ranking.describe() is not None:
        described.append({"ranking": ranking.describe()})
    digest = hashlib.sha256(_canonical(described).encode()).hexdigest()[:10]
    return f"{'+'.join(sorted(adapters))}-{digest}"


def _describe(plan: TargetPlan) -> dict[str, Any]:
    return {
        "control": plan.target.control,
        "control_type": plan.target.control_type,
        "choice": plan.target.attrs.get("choice"),
        "to_name": plan.target.to_name,
        "adapter": plan.spec.adapter,
        "model_id": plan.spec.model_id,
        "params": public_params(plan.params),
        "post": dataclasses.asdict(plan.post),
        "prompts": plan.prompts,
        "prompt_labels": plan.prompt_labels,
        "examples": [dataclasses.asdict(e) for e in plan.examples],
        "labels": plan.target.labels,
        "detector": _describe(plan.detector) if plan.detector else None,
        "negatives": dataclasses.asdict(plan.negatives) if plan.negatives else None,
        "members": [{"weight": m.weight, **_describe(m.plan)} for m in plan.members],
        "verify": {"margin": plan.verify.margin, "action": plan.verify.action, **_describe(plan.verify.plan)}
        if plan.verify
        else None,
        "tiling": dataclasses.asdict(plan.tiling) if plan.tiling else None,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
