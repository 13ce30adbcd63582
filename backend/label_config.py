"""Label config -> targets: every control tag bound to an ``<Image>`` and the job it asks for.

The config is parsed with Label Studio's own ``LabelInterface``. A target names the control (``from_name``),
the image (``to_name``), the task data key holding the image URL, the control's labels and the prompts
given on its ``<Label predicted_values="...">`` tags. Which model serves a target is decided later, by the
project settings.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from label_studio_sdk.label_interface import LabelInterface

from backend.errors import LabelConfigError
from model_adapters.base import Task

__all__ = ["CONTROL_TASKS", "Target", "parse_targets"]

log = logging.getLogger(__name__)

# Control tag -> the job prelabel does for it.
CONTROL_TASKS: Mapping[str, Task] = MappingProxyType(
    {
        "RectangleLabels": Task.DETECTION,
        "PolygonLabels": Task.SEGMENTATION,
        "BrushLabels": Task.SEGMENTATION,
        "Choices": Task.CLASSIFICATION,
    }
)
# Controls that only make sense interactively, with the annotator's clicks as prompts.
_INTERACTIVE_ONLY = frozenset({"KeyPointLabels", "Rectangle", "KeyPoint"})


@dataclass(frozen=True)
class Target:
    """One control on one image: what Label Studio expects a region for.

    Attributes:
        control: The control's ``name`` (a region's ``from_name``).
        control_type: Its tag, e.g. ``"RectangleLabels"``.
        to_name: The ``<Image>`` it labels (a region's ``to_name``).
        value_key: The task data key that holds the image URL (``$image`` -> ``"image"``).
        task: What prelabel does for it; ``None`` for interactive-only controls.
        labels: Label values, in config order.
        predicted_values: Label -> prompts from its ``predicted_values`` attribute (absent when unset).
        attrs: The control's attributes (``model_score_threshold``, ``choice``, ``smart``, ...).
    """

    control: str
    control_type: str
    to_name: str
    value_key: str
    task: Task | None
    labels: tuple[str, ...]
    predicted_values: Mapping[str, tuple[str, ...]]
    attrs: Mapping[str, str]

    @property
    def smart(self) -> bool:
        """Whether the control takes interactive prompts (``smart="true"``)."""
        return self.attrs.get("smart", "").lower() == "true"


@functools.lru_cache(maxsize=256)
def parse_targets(label_config: str) -> tuple[Target, ...]:
    """Parse a label config into its image targets (cached: Label Studio resends the config often).

    Raises:
        LabelConfigError: The XML cannot be parsed.
    """
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises many types for bad XML
        raise LabelConfigError(f"label config cannot be parsed: {exc}") from exc
    targets = []
    for control in interface.controls:
        if control.tag not in CONTROL_TASKS and control.tag not in _INTERACTIVE_ONLY:
            continue
        for obj in control.objects:
            if obj.tag != "Image":
                log.debug("control %s labels a %s, not an image: skipped", control.name, obj.tag)
                continue
            prompts = {
                label: tuple(v.strip() for v in tag.attr["predicted_values"].split(",") if v.strip())
                for label, tag in control.labels_attrs.items()
                if tag.attr.get("predicted_values")
            }
            targets.append(
                Target(
                    control=control.name,
                    control_type=control.tag,
                    to_name=obj.name,
                    value_key=obj.value.lstrip("$"),
                    task=CONTROL_TASKS.get(control.tag),
                    labels=tuple(control.labels),
                    predicted_values=MappingProxyType(prompts),
                    attrs=MappingProxyType({k: str(v) for k, v in control.attr.items()}),
                )
            )
    return tuple(targets)
