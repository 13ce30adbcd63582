"""Review through a real Label Studio 1.23: the backend's predictions stored, two annotations made through the API by
two users (the admin accepts a prediction, a second user changes another), then ``/report``, ``/report.html`` and
``prelabel report`` give the numbers a hand count of what Label Studio stores gives, and the "Model disagrees" tab
read back through the API selects the task the second user changed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.e2e.browser import colour_pixels, open_page
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
        reviewer = ls.create_user("reviewer@example.com", "Rev-iewer-2025!")
        changed_by_reviewer = ls.api(
            "POST", f"/api/tasks/{task_ids[1]}/annotations", headers={"Authorization": f"Token {reviewer}"},
            json={"result": [{"from_name": "colour", "to_name": "image", "type": "choices",
                              "value": {"choices": [other]}}]},
        )  # fmt: skip
        assert changed_by_reviewer.status_code == 201, changed_by_reviewer.text

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
        people = {p["annotator"]: (p["annotations"], p["agreement"], p["unchanged"]) for p in report["annotators"]}
        admin = [v for name, v in people.items() if "admin@example.com" in name]
        second = [v for name, v in people.items() if "reviewer" in name]
        assert len(people) == 2 and admin == [(1, 1.0, 1.0)] and second == [(1, 0.0, 0.0)], people
        (worst,) = report["disagreements"]
        assert worst["task"] == task_ids[1] and worst["url"] == f"{ls.base_url}/projects/{pid}/data?task={task_ids[1]}"
        assert report["disagreeing_tasks"] == [task_ids[1]]
        (kept_version,) = report["history"]
        assert (kept_version["model_version"], kept_version["annotations"], kept_version["agreement"]) == (
            version, 2, 0.5)  # fmt: skip

        made = requests.post(f"{server.url}/label-next", params={"project": pid, "disagreements": 1}, timeout=60)
        assert made.status_code == 200 and made.json()["action"] == "created", made.text
        again = requests.post(f"{server.url}/label-next", params={"project": pid, "disagreements": 1}, timeout=60)
        assert again.json()["action"] == "updated" and again.json()["id"] == made.json()["id"]
        (tab,) = [v for v in ls.api("GET", "/api/dm/views", params={"project": pid}).json()
                  if v["data"].get("title") == "Model disagrees: review these"]  # fmt: skip
        assert tab["data"]["ordering"] == ["-tasks:predictions_score"]
        assert tab["data"]["filters"]["conjunction"] == "or"
        assert [(i["filter"], i["operator"], i["value"]) for i in tab["data"]["filters"]["items"]] == [
            ("filter:tasks:id", "equal", task_ids[1])]  # fmt: skip
        shown = ls.api("GET", "/api/tasks", params={"project": pid, "view": tab["id"]}).json()["tasks"]
        assert [t["id"] for t in shown] == [task_ids[1]]  # Label Studio applies the filter: only that task

        page = requests.get(f"{server.url}/report.html", params={"project": pid}, timeout=60)
        assert page.status_code == 200 and "<table class='cm'>" in page.text and "<svg" in page.text
        dom, pixels = open_page(page.text, tmp_path)
        assert '<table class="cm">' in dom and dom.count('<rect class="precision"') == len(report["labels"])
        assert colour_pixels(pixels, "#1565c0") > 100  # the precision and agreement bars are painted
        cli = subprocess.run(
            [sys.executable, "-m", "backend.cli", "report", "--project", str(pid)],
            env={**os.environ, **server.env}, capture_output=True, text=True, timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.startswith(f"project {pid}, model version {version}: 2 annotations of 2 tasks compared")
        assert "colour: accuracy 0.50 (1 of 2)" in cli.stdout
