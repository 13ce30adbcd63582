"""Make a tiny random-weight generative model write a chosen answer, and score it independently.

Random weights generate noise; to test parsing, box mapping and scores end to end, ``force(model, ids)``
patches ``model.generate`` with a logits processor that lets only the next chosen token win (greedy). The
adapter's scores come from the raw logits, so they stay the model's own probabilities of those tokens;
``teacher_forced_probs`` recomputes them with one plain forward pass over the whole sequence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList


class ForceTokens(LogitsProcessor):
    """At generation step k, only ``ids[k]`` may win (after the last one, only ``ids[-1]``)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = min(input_ids.shape[1] - self.start, len(self.ids) - 1)
        forced = torch.full_like(scores, -torch.inf)
        forced[:, self.ids[step]] = 0
        return forced


def force(monkeypatch: pytest.MonkeyPatch, target: Any, ids_for_call: Callable[[], Sequence[int]]) -> None:
    """Every ``generate`` of ``target`` (a model, or a model class: all its instances) writes ``ids_for_call()``."""
    cls = target if isinstance(target, type) else type(target)
    original = getattr(cls.generate, "unforced", cls.generate)  # a second call replaces the first

    @functools.wraps(original)
    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, logits_processor=LogitsProcessorList([ForceTokens(ids_for_call())]), **kwargs)

    generate.unforced = original  # type: ignore[attr-defined]
    monkeypatch.setattr(cls, "generate", generate)


def next_token_probs(logits: torch.Tensor, ids: torch.Tensor, first: int) -> list[float]:
    """Softmax probability of ``ids[k]`` under ``logits[k - 1]`` for every k >= first (one row)."""
    probs = logits.float().softmax(-1)
    return [float(probs[k - 1, ids[k]]) for k in range(first, len(ids))]
