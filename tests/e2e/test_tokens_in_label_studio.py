"""Label Studio 1.23 as it ships: legacy tokens off. The /setup token is refused; a Personal Access Token works."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.e2e.test_prelabel_in_label_studio import write_image
from tests.helpers import RECT_CONFIG

pytestmark = pytest.mark.e2e


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def test_without_legacy_tokens_the_setup_token_is_flagged_and_a_pat_prelabels_uploads(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.0}}
    with ls.legacy_tokens_disabled() as pat:
        project = ls.create_project("prelabel tokens", RECT_CONFIG)
        (task_id,) = ls.import_files(project["id"], [write_image(tmp_path / "u.jpg", 64, 48, 7)])

        # No LABEL_STUDIO_* settings: prelabel uses the hostname and the legacy token that /setup sends.
        env = {"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""}
        with PrelabelServer(tmp_path / "setup-token", env, workers=1) as server:
            backend = ls.add_ml_backend(project["id"], server.url, title="setup token", extra_params=extra)
            flagged = "refused the token /setup sent (HTTP 401)"
            assert wait_for(lambda: flagged in ls.api("GET", server.url + "/").text), server.log_tail()
            ls.retrieve_predictions(project["id"])
            assert ls.predictions(task_id) == []  # not a final empty prediction: the task stays retryable
            page = ls.api("GET", server.url + "/").text
            assert "refused prelabel's credentials" in page and "Personal Access Token" in page
            ls.api("DELETE", f"/api/ml/{backend['id']}")

        # The README's way: a Personal Access Token in LABEL_STUDIO_API_KEY.
        env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": pat}
        with PrelabelServer(tmp_path / "pat", env, workers=1) as server:
            ls.add_ml_backend(project["id"], server.url, title="pat", extra_params=extra)
            ls.retrieve_predictions(project["id"])
            (prediction,) = ls.predictions(task_id)
            assert prediction["result"], server.log_tail()
            assert "refused" not in ls.api("GET", server.url + "/").text
