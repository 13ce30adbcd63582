"""End-to-end fixtures: one real Label Studio per session, started by the test run on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.label_studio import LABEL_STUDIO_BIN_ENV, LabelStudio


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With PRELABEL_E2E=required (the README's test command), a missing Label Studio is an error, not a skip."""
    wanted = any(item.get_closest_marker("e2e") for item in items)
    if wanted and os.environ.get("PRELABEL_E2E") == "required" and not os.environ.get(LABEL_STUDIO_BIN_ENV):
        raise pytest.UsageError(f"PRELABEL_E2E=required but {LABEL_STUDIO_BIN_ENV} is not set")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    if not os.environ.get(LABEL_STUDIO_BIN_ENV):
        pytest.skip(f"{LABEL_STUDIO_BIN_ENV} is not set (path of a Label Studio 1.23 `label-studio` executable)")
    root = tmp_path_factory.mktemp("label-studio")
    with LabelStudio(root / "documents", log_path=root / "label-studio.log") as ls:
        yield ls
