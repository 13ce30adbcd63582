"""Adapters registered by name, timm-style: ``family`` or ``family.variant``.

Each family file decorates its adapter class with ``@register_adapter``; the class lists its variants
(variant -> default weights). Looking up a name imports the family modules, which is cheap because they
import their model libraries only inside ``load``.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from model_adapters.base import Adapter

__all__ = ["UnknownAdapterError", "available_adapters", "register_adapter", "resolve_adapter"]

# Family modules, in the order `available_adapters` lists them.
_FAMILY_MODULES = (
    "grounding_dino",
    "owl",
    "omdet_turbo",
    "detic",
    "vlpart",
    "clip",
    "siglip",
    "blip",
    "openclip",
    "fastvit",
    "albef",
    "dinov2",
    "sam",
    "sam2",
    "sam3",
    "roboflow",
    "kosmos2",
    "florence2",
    "llava",
    "qwen2_5_vl",
)

_ADAPTERS: dict[str, type[Adapter]] = {}
_discovered = False

A = TypeVar("A", bound=type[Adapter])


class UnknownAdapterError(KeyError):
    """An adapter or variant name that is not registered; the message lists valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_adapter(cls: A) -> A:
    """Class decorator adding an adapter family under ``cls.name``; a second family of that name raises."""
    if cls.name in _ADAPTERS and _ADAPTERS[cls.name] is not cls:
        raise ValueError(f"adapter {cls.name!r} is registered twice ({_ADAPTERS[cls.name]!r} and {cls!r})")
    if cls.default_variant not in cls.variants:
        raise ValueError(f"{cls.name}: default_variant {cls.default_variant!r} is not in its variants")
    _ADAPTERS[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in _FAMILY_MODULES:
            importlib.import_module(f"model_adapters.{module}")
        _discovered = True


def available_adapters() -> list[str]:
    """Every registered name: each family, then each ``family.variant``."""
    _discover()
    names = []
    for family, cls in _ADAPTERS.items():
        names.append(family)
        names.extend(f"{family}.{variant}" for variant in cls.variants)
    return names


def resolve_adapter(name: str) -> tuple[type[Adapter], str]:
    """Return the adapter class and default weights for ``family`` or ``family.variant``.

    Raises:
        UnknownAdapterError: The family or variant is unknown; the message lists the valid names.
    """
    _discover()
    family, _, variant = name.partition(".")
    cls = _ADAPTERS.get(family)
    if cls is None:
        raise UnknownAdapterError(f"unknown model {name!r}; available: {', '.join(sorted(_ADAPTERS))}")
    variant = variant or cls.default_variant
    if variant not in cls.variants:
        known = ", ".join(f"{family}.{v}" for v in cls.variants)
        raise UnknownAdapterError(f"unknown variant {name!r}; {family} has: {known}")
    return cls, cls.variants[variant]
