"""Labels -> what the model is asked: text prompts and example boxes, from the config and the settings.

Prompts per label: ``extra_params`` (the control's ``prompts``, then the project's) > the label's
``predicted_values`` > the label value itself. Example boxes (few-shot) come from ``examples`` the same way, and
negative prompts (things a label's boxes must not be) from ``negatives``, where ``"*"`` names every label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.errors import ProjectSettingsError
from backend.label_config import Target

__all__ = ["ANY_LABEL", "LABEL_MAPS", "ExampleRef", "check_label_maps", "examples_for", "negatives_for", "prompts_for"]

LABEL_MAPS = ("prompts", "examples", "negatives")  # label -> value mappings, at the top level and per control
ANY_LABEL = "*"  # in ``negatives``: applies to every label of the control


@dataclass(frozen=True)
class ExampleRef:
    """An example box of a label from the settings (few-shot visual prompt).

    Attributes:
        label: Index of the label in ``target.labels``.
        image: Image reference, fetched like a task image (URL, ``/data/...``, ``s3://``, ``data:``).
        rect: ``(x, y, width, height)`` in percent of the image, as Label Studio stores rectangles.
    """

    label: int
    image: str
    rect: tuple[float, float, float, float]


def _label_map(target: Target, project: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A label -> value mapping (``prompts`` or ``examples``): the control's entries over the project's."""
    return {**project.get(key, {}), **project.get("controls", {}).get(target.control, {}).get(key, {})}


def prompts_for(target: Target, project: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Prompts per label: extra_params (control, then project) > ``predicted_values`` > the label itself."""
    mapping = _label_map(target, project, "prompts")
    prompts: list[str] = []
    owners: list[int] = []
    for i, label in enumerate(target.labels):
        given = mapping.get(label)
        texts = _prompt_list(given, label) if given is not None else target.predicted_values.get(label, (label,))
        for text in texts:
            prompts.append(text)
            owners.append(i)
    return tuple(prompts), tuple(owners)


def negatives_for(target: Target, project: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Negative prompts and, for each, the label indices whose boxes it vetoes (every label for ``"*"``).

    A text named for several labels is asked once and vetoes all of them.
    """
    scopes: dict[str, set[int]] = {}
    for label, value in _label_map(target, project, "negatives").items():
        if label != ANY_LABEL and label not in target.labels:
            continue
        owners = range(len(target.labels)) if label == ANY_LABEL else (target.labels.index(label),)
        for text in _prompt_list(value, label, "negatives"):
            scopes.setdefault(text, set()).update(owners)
    return tuple(scopes), tuple(tuple(sorted(s)) for s in scopes.values())


def _prompt_list(value: Any, label: str, key: str = "prompts") -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        like = '["car", "truck"]' if key == "prompts" else '["toy car", "car poster"]'
        raise ProjectSettingsError(f"{key}.{label} must be a list of strings like {like}, got {value!r}")
    texts = tuple(v.strip() for v in items if v.strip())
    if not texts:
        raise ProjectSettingsError(f"{key}.{label} must name at least one prompt")
    return texts


def examples_for(target: Target, project: Mapping[str, Any]) -> tuple[ExampleRef, ...]:
    """Example boxes per label, each ``{"image": ref, "x", "y", "width", "height"}`` in percent."""
    examples = []
    for label, items in _label_map(target, project, "examples").items():
        if label not in target.labels:
            continue
        where = f"examples.{label}"
        if not isinstance(items, list):
            raise ProjectSettingsError(f"{where} must be a list of example boxes")
        for item in items:
            rect = _example_rect(item, where)
            examples.append(ExampleRef(target.labels.index(label), item["image"], rect))
    return tuple(examples)


def _example_rect(item: Any, where: str) -> tuple[float, float, float, float]:
    example = '{"image": "/data/upload/1/cat.jpg", "x": 10, "y": 20, "width": 30, "height": 40}'
    keys = ("x", "y", "width", "height")
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("image"), str)
        or not all(isinstance(item.get(k), int | float) and not isinstance(item.get(k), bool) for k in keys)
    ):
        raise ProjectSettingsError(f"{where}: each example must look like {example}, got {item!r}")
    x, y, width, height = (float(item[k]) for k in keys)
    if not (0 <= x < 100 and 0 <= y < 100 and 0 < width <= 100 - x and 0 < height <= 100 - y):
        raise ProjectSettingsError(f"{where}: the box must lie inside the image, in percent, got {item!r}")
    return x, y, width, height


def check_label_maps(project: Mapping[str, Any], targets: tuple[Target, ...]) -> None:
    """Every label named in ``prompts``/``examples`` (project or control) must be a label of the config."""
    labels = {label for t in targets for label in t.labels}
    sections = [(f"extra_params.{key}", project.get(key, {})) for key in LABEL_MAPS] + [
        (f"extra_params.controls.{name}.{key}", c.get(key, {}))
        for name, c in project.get("controls", {}).items()
        if isinstance(c, dict)
        for key in LABEL_MAPS
    ]
    for where, mapping in sections:
        if not isinstance(mapping, dict):
            raise ProjectSettingsError(f"{where} must map label -> values, got {mapping!r}")
        for label in mapping:
            if label not in labels and not (where.endswith("negatives") and label == ANY_LABEL):
                raise ProjectSettingsError(f"{where}: {label!r} is not a label in the config; labels: {sorted(labels)}")
