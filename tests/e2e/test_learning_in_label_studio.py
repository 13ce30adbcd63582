"""Learning through a real Label Studio 1.23: annotations submitted through its API reach prelabel as webhooks, a
fit makes a new version, the next retrieve uses it; "Start training" refits from all annotations, fetched back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer

pytestmark = pytest.mark.e2e

CHOICES = """<View><Image name="image" value="$image"/>
<Choices name="colour" toName="image"><Choice value="Red"/><Choice value="Blue"/></Choices></View>"""
RED, BLUE = (200, 30, 30), (30, 30, 200)


def coloured_file(path: Path, rgb: tuple[int, int, int], seed: int) -> Path:
    noise = np.random.default_rng(seed).integers(-25, 25, (32, 40, 3))
    Image.fromarray(np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def versions(server: PrelabelServer, project_id: int) -> list[str]:
    return requests.get(f"{server.url}/versions", params={"project": project_id}, timeout=10).json()["versions"]


def wait_for(condition: Callable[[], bool], seconds: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, why()
        time.sleep(0.5)


def test_annotations_through_label_studio_make_a_new_version_and_start_training_refits(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.create_personal_access_token(),
           "PRELABEL_FIT_DEBOUNCE": "0.5"}  # fmt: skip
    with PrelabelServer(tmp_path / "prelabel", env, workers=2) as server:
        project = ls.create_project("prelabel learning", CHOICES)
        colours = [RED, RED, BLUE, BLUE, RED, RED, BLUE, BLUE]
        files = [coloured_file(tmp_path / f"{i}.png", rgb, i) for i, rgb in enumerate(colours)]
        task_ids = ls.import_files(project["id"], files)
        extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
        backend = ls.add_ml_backend(project["id"], server.url, title="prelabel", extra_params=extra)
        ls.retrieve_predictions(project["id"])
        (base,) = versions(server, project["id"])

        # Annotators label the first four tasks; Label Studio posts ANNOTATION_CREATED to prelabel's /webhook.
        for task_id, rgb in zip(task_ids[:4], colours[:4], strict=True):
            label = "Red" if rgb == RED else "Blue"
            ls.create_annotation(task_id, [{"from_name": "colour", "to_name": "image", "type": "choices",
                                            "value": {"choices": [label]}}])  # fmt: skip
        wait_for(lambda: f"{base}-fit1" in versions(server, project["id"]), 60, server.log_tail)

        ls.retrieve_predictions(project["id"])  # Label Studio sees the new version in /setup and predicts again
        for task_id, rgb in zip(task_ids[4:], colours[4:], strict=True):
            newest = max(ls.predictions(task_id), key=lambda p: p["id"])
            assert newest["model_version"] == f"{base}-fit1"
            assert newest["result"][0]["value"]["choices"] == ["Red" if rgb == RED else "Blue"], server.log_tail()

        # "Start training": prelabel fetches every annotation back through the API and fits again.
        assert ls.train(backend["id"]).status_code in (200, 201), ls.log_tail()
        wait_for(lambda: f"{base}-fit2" in versions(server, project["id"]), 60, server.log_tail)
        assert "fitted" in server.log_text() and "Traceback" not in server.log_text()
