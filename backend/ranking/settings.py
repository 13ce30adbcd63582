"""``extra_params.active_learning`` -> checked ranking settings (``/setup`` refuses bad ones with the key named)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from backend.errors import ProjectSettingsError
from model_adapters.base import SettingsError, make_params

__all__ = ["MAX_REPREDICT", "STRATEGIES", "RankingSettings", "ranking_settings"]

Strategy = Literal["confidence", "least_confidence", "margin", "entropy", "close_to_threshold", "disagreement"]
STRATEGIES: tuple[str, ...] = Strategy.__args__  # type: ignore[attr-defined]
MAX_REPREDICT = 10_000  # one fit never queues more: the rest wait for the next fit or a bulk job


@dataclass(frozen=True)
class RankingSettings:
    """How a project's prediction scores rank its tasks.

    Attributes:
        strategy: What a low score means (see ``backend.ranking.strategies``); ``confidence`` is the mean region
            score, as before this setting existed.
        rare_boost: 0 to 1: how far a task that likely holds a rarely annotated label is pulled towards 0 (first).
        repredict: After each fit that makes a new version, re-predict this many of the most uncertain unlabelled
            tasks in the background (``backend.ranking.closing_loop``); 0, the default, turns the loop off.
    """

    strategy: Strategy = "confidence"
    rare_boost: float = 0.0
    repredict: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rare_boost <= 1.0:
            raise SettingsError(f"active_learning.rare_boost must be between 0 and 1, got {self.rare_boost!r}")
        if not 0 <= self.repredict <= MAX_REPREDICT:
            raise SettingsError(f"active_learning.repredict must be from 0 to {MAX_REPREDICT}, got {self.repredict!r}")

    def describe(self) -> dict[str, Any] | None:
        """What of these settings changes the stored scores (for the model version); ``None`` for the defaults."""
        changed = {"strategy": self.strategy, "rare_boost": self.rare_boost}
        return None if changed == {"strategy": "confidence", "rare_boost": 0.0} else changed


def ranking_settings(extra_params: Mapping[str, Any]) -> RankingSettings:
    """The project's ranking settings.

    Raises:
        ProjectSettingsError: An unknown key or a wrong value; the message names it.
    """
    raw = extra_params.get("active_learning", {})
    if not isinstance(raw, dict):
        raise ProjectSettingsError(
            f'extra_params.active_learning must be a JSON object like {{"strategy": "margin"}}, got {raw!r}'
        )
    try:
        return make_params(RankingSettings, raw, owner="active_learning")
    except SettingsError as exc:
        raise ProjectSettingsError(f"extra_params: {exc}") from None
