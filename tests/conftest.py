"""Shared fixtures: offline hub, tiny models built once per session, a local HTTP server."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalServer


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny("grounding_dino")`` -> a directory with a tiny random-weight model, built once per session."""
    from tests.tiny_models import TINY_BUILDERS

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = TINY_BUILDERS[family](tmp_path_factory.mktemp(family))
        return built[family]

    return get


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A Flask app on 127.0.0.1 with a free port; add routes to ``server.app`` before requests."""
    with LocalServer() as running:
        yield running
