"""Through a real Label Studio 1.23: a Roboflow model (a loopback fake of its hosted API) prelabels an uploaded image.

The project's Roboflow key travels in extra_params: it reaches Roboflow and nothing else (server log, status page).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.e2e.test_prelabel_in_label_studio import write_image
from tests.fake_roboflow import FakeModel, FakeRoboflow
from tests.helpers import RECT_CONFIG

pytestmark = pytest.mark.e2e

SECRET = "rf-e2e-3f9a61c7d2-unique"


def test_a_roboflow_model_prelabels_through_label_studio(label_studio: LabelStudio, tmp_path: Path) -> None:
    ls = label_studio
    with FakeRoboflow(SECRET) as fake:
        # A 20 x 16 px "cat" centred at (30, 20) of the 64 x 48 upload, and a class the project has no label for.
        fake.models["pets-detect/4"] = FakeModel("detection", lambda w, h: [
            {"x": 30, "y": 20, "width": 20, "height": 16, "confidence": 0.85, "class": "Cat", "class_id": 0},
            {"x": 5, "y": 5, "width": 4, "height": 4, "confidence": 0.9, "class": "dog", "class_id": 1},
        ])  # fmt: skip
        env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.token, "ROBOFLOW_API_URL": fake.url}
        with PrelabelServer(tmp_path / "prelabel", env, workers=1) as server:
            project = ls.create_project("prelabel roboflow", RECT_CONFIG)
            (task_id,) = ls.import_files(project["id"], [write_image(tmp_path / "cat.jpg", 64, 48, 3)])
            extra = {"detection": {"model": "roboflow", "model_id": "pets-detect/4", "api": "self_hosted",
                                   "api_key": SECRET}}  # fmt: skip
            ls.add_ml_backend(project["id"], server.url, title="roboflow", extra_params=extra)
            ls.retrieve_predictions(project["id"])

            (prediction,) = ls.predictions(task_id)
            (region,) = prediction["result"]
            value = region["value"]
            assert value["rectanglelabels"] == ["Cat"] and region["score"] == pytest.approx(0.85)
            # Corners (20, 12) and (40, 28) of 64 x 48, in percent.
            assert [value[k] for k in ("x", "y", "width", "height")] == pytest.approx([31.25, 25.0, 31.25, 100 / 3])
            assert [s.size_wh for s in fake.seen] == [(64, 48)]
            assert {s.query["api_key"] for s in fake.seen} == {SECRET}
            page = ls.api("GET", server.url + "/").text
            assert SECRET not in server.log_text() and SECRET not in page and "[REDACTED]" in page
