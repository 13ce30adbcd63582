"""``extra_params.learning`` -> checked learning settings (``/setup`` refuses bad ones with the key named)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.errors import ProjectSettingsError
from model_adapters.base import SettingsError, make_params

__all__ = ["LearningSettings", "learning_settings"]


@dataclass(frozen=True)
class LearningSettings:
    """How a project learns from its annotations.

    Attributes:
        enabled: Fit on annotation events and "Start training" (off: predictions stay zero-shot).
        min_examples: Annotated boxes a label needs before its score threshold is calibrated.
        embedding: What a ``Choices`` head is fitted on: ``"classifier"`` (the control's own zero-shot model, whose
            text embeddings are the head's prior) or an adapter name such as ``"dinov2"`` (no prior).
        prior_weight: How strongly a head is pulled back to the zero-shot prior (0: a plain linear probe).
        few_shot: For OWL-ViT/OWLv2 controls, annotated boxes become image-guided queries.
        queries_per_label: Most annotated boxes per label kept as queries (the newest).
        version: Serve this earlier fit (``"fit3"`` or the full version) instead of the newest: a rollback.
    """

    enabled: bool = True
    min_examples: int = 5
    embedding: str = "classifier"
    prior_weight: float = 1.0
    few_shot: bool = True
    queries_per_label: int = 4
    version: str | None = None

    def __post_init__(self) -> None:
        if self.min_examples < 1:
            raise SettingsError(f"learning.min_examples must be at least 1, got {self.min_examples}")
        if self.prior_weight < 0:
            raise SettingsError(f"learning.prior_weight must be >= 0, got {self.prior_weight}")
        if not 1 <= self.queries_per_label <= 64:
            raise SettingsError(f"learning.queries_per_label must be between 1 and 64, got {self.queries_per_label}")


def learning_settings(extra_params: Mapping[str, Any]) -> LearningSettings:
    """The project's learning settings.

    Raises:
        ProjectSettingsError: An unknown key or a wrong value; the message names it.
    """
    raw = extra_params.get("learning", {})
    if not isinstance(raw, dict):
        raise ProjectSettingsError(f"extra_params.learning must be a JSON object, got {raw!r}")
    try:
        return make_params(LearningSettings, raw, owner="learning")
    except SettingsError as exc:
        raise ProjectSettingsError(f"extra_params: {exc}") from None
