"""Through a real Label Studio 1.23: a task whose image failed once is predicted by the next retrieve, never frozen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Response

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, LocalServer, image_bytes

pytestmark = pytest.mark.e2e


def test_a_transient_image_error_leaves_the_task_for_the_next_retrieve(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    with LocalServer() as images:
        calls = {"flaky": 0}

        @images.app.get("/steady.png")
        def steady() -> Response:
            return Response(image_bytes(64, 48, seed=1), content_type="image/png")

        @images.app.get("/flaky.png")
        def flaky() -> Response:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                return Response("busy", status=503)
            return Response(image_bytes(64, 48, seed=2), content_type="image/png")

        host = images.url.removeprefix("http://")
        env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.token, "PRELABEL_MEDIA_ALLOWED_HOSTS": host}
        with PrelabelServer(tmp_path / "prelabel", env, workers=1) as server:
            project = ls.create_project("prelabel retries", RECT_CONFIG)
            steady_id, flaky_id = ls.import_tasks(
                project["id"],
                [{"data": {"image": f"{images.url}/steady.png"}}, {"data": {"image": f"{images.url}/flaky.png"}}],
            )
            extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.0}}
            ls.add_ml_backend(project["id"], server.url, title="prelabel", extra_params=extra)

            ls.retrieve_predictions(project["id"])
            assert len(ls.predictions(steady_id)) == 1
            assert ls.predictions(flaky_id) == [], "a failed task must not get a (final, empty) prediction"
            page = ls.api("GET", server.url + "/").text
            assert f"task {flaky_id}: image &#x27;image&#x27;: HTTP 503" in page

            ls.retrieve_predictions(project["id"])  # Label Studio sends only the task without a prediction
            (prediction,) = ls.predictions(flaky_id)
            assert prediction["result"], server.log_tail()
            assert len(ls.predictions(steady_id)) == 1 and calls["flaky"] == 2
