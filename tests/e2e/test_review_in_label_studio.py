"""Review through a real Label Studio 1.23: the backend's predictions stored, two annotations made through the API
(one accepting the prediction, one changing it), then ``/report``, ``/report.html`` and ``prelabel report`` give the
numbers a hand count of what Label Studio stores gives."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.e2e.test_learning_in_label_studio import BLUE, CHOICES, RED, coloured_file

pytestmark = pytest.mark.e2e


def test_report_counts_what_label_studio_stores(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    # no fit: the version stays the zero-shot one
    env = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.create_personal_access_token(),
           "PRELABEL_FIT_DEBOUNCE": "3600"}  # fmt: skip
    with PrelabelServer(tmp_path / "prelabel", env, workers=1) as server:
        project = ls.create_project("prelabel review", CHOICES)
        pid = project["id"]
        files = [coloured_file(tmp_path / f"{i}.png", rgb, i) for i, rgb in enumerate([RED, BLUE, RED])]
        task_ids = ls.import_files(pid, files)
        extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
        ls.add_ml_backend(pid, server.url, title="prelabel", extra_params=extra)
        ls.retrieve_predictions(pid)
        (kept, changed, _) = [ls.predictions(t)[0] for t in task_ids]
        (version,) = {kept["model_version"], changed["model_version"]}
        said = changed["result"][0]["value"]["choices"][0]
        other = "Blue" if said == "Red" else "Red"
        ls.create_annotation(task_ids[0], kept["result"])  # accepted as predicted
        ls.create_annotation(task_ids[1], [{"from_name": "colour", "to_name": "image", "type": "choices",
                                            "value": {"choices": [other]}}])  # fmt: skip

        response = requests.get(f"{server.url}/report", params={"project": pid}, timeout=60)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["model_version"] == version and report["compared_versions"] == {version: 2}
        assert (report["annotations"], report["tasks"], report["agreement"], report["unchanged"]) == (2, 2, 0.5, 0.5)
        (colour,) = report["choices"]
        assert (colour["compared"], colour["correct"], colour["accuracy"]) == (2, 1, 0.5)
        first = kept["result"][0]["value"]["choices"][0]
        cells = {(a, p): n for a, row in zip(colour["annotated"], colour["matrix"], strict=True)
                 for p, n in zip(colour["predicted"], row, strict=True) if n}  # fmt: skip
        expected: dict[tuple[str, str], int] = {(first, first): 1}
        expected[other, said] = expected.get((other, said), 0) + 1
        assert cells == expected
        ((who, agreed),) = [(p["annotator"], p["agreement"]) for p in report["annotators"]]
        assert "admin@example.com" in who and agreed == 0.5
        (worst,) = report["disagreements"]
        assert worst["task"] == task_ids[1] and worst["url"] == f"{ls.base_url}/projects/{pid}/data?task={task_ids[1]}"

        page = requests.get(f"{server.url}/report.html", params={"project": pid}, timeout=60)
        assert page.status_code == 200 and "<table class='cm'>" in page.text and "<svg" in page.text
        cli = subprocess.run(
            [sys.executable, "-m", "backend.cli", "report", "--project", str(pid)],
            env={**os.environ, **server.env}, capture_output=True, text=True, timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.startswith(f"project {pid}, model version {version}: 2 annotations of 2 tasks compared")
        assert "colour: accuracy 0.50 (1 of 2)" in cli.stdout
