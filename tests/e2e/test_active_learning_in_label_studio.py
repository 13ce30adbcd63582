"""Active learning through a real Label Studio 1.23: predictions scored by a strategy, then the "Label next" tab made
through its API (by the CLI and by the server, twice: one tab), read back with its ordering and filter, and the
tasks Label Studio lists in it are the unannotated ones, lowest score first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from backend.ranking.tabs import LABEL_NEXT
from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.e2e.test_learning_in_label_studio import BLUE, CHOICES, RED, coloured_file, versions, wait_for

pytestmark = pytest.mark.e2e


def test_label_next_tab_lists_unannotated_tasks_most_uncertain_first(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    env = {
        "LABEL_STUDIO_URL": ls.base_url,
        "LABEL_STUDIO_API_KEY": ls.create_personal_access_token(),
        "PRELABEL_FIT_DEBOUNCE": "3600",
    }  # fmt: skip  (no fit: the scores stay the zero-shot ones)
    with PrelabelServer(tmp_path / "prelabel", env, workers=1) as server:
        project = ls.create_project("prelabel label next", CHOICES)
        files = [coloured_file(tmp_path / f"{i}.png", rgb, i) for i, rgb in enumerate([RED, BLUE, RED, BLUE, RED])]
        task_ids = ls.import_files(project["id"], files)
        extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))},
                 "active_learning": {"strategy": "margin"}}  # fmt: skip
        ls.add_ml_backend(project["id"], server.url, title="prelabel", extra_params=extra)
        ls.retrieve_predictions(project["id"])
        scores = {t: ls.predictions(t)[0]["score"] for t in task_ids}
        assert len(set(scores.values())) == len(scores), scores  # distinct, so the order is defined
        ls.create_annotation(task_ids[0], [{"from_name": "colour", "to_name": "image", "type": "choices",
                                            "value": {"choices": ["Red"]}}])  # fmt: skip

        cli = subprocess.run(
            [sys.executable, "-m", "backend.cli", "label-next", "--project", str(project["id"])],
            env={**os.environ, **server.env}, capture_output=True, text=True, timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        made = json.loads(cli.stdout)
        (version,) = {ls.predictions(t)[0]["model_version"] for t in task_ids}
        assert made["action"] == "created" and made["scores_from"] == version
        assert ls._json("GET", f"/api/projects/{project['id']}")["model_version"] == version
        again = requests.post(f"{server.url}/label-next", params={"project": project["id"]}, timeout=30)
        assert again.status_code == 200, again.text
        assert again.json() == {**made, "action": "updated"}

        views = ls._json("GET", "/api/dm/views", params={"project": project["id"]})
        (view,) = [v for v in views if v["data"].get("title") == LABEL_NEXT]
        assert view["id"] == made["id"]
        assert view["data"]["ordering"] == ["tasks:predictions_score"]
        (row,) = view["data"]["filters"]["items"]
        assert (row["filter"], row["operator"], row["value"]) == ("filter:tasks:total_annotations", "equal", 0)

        listed = ls._json("GET", "/api/tasks", params={"project": project["id"], "view": view["id"]})
        listed = listed["tasks"] if isinstance(listed, dict) else listed
        expected = sorted(task_ids[1:], key=lambda t: scores[t])
        assert [t["id"] for t in listed] == expected


def test_the_loop_closes_itself_annotations_fit_repredict_and_the_tab_follows(
    label_studio: LabelStudio, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    env = {
        "LABEL_STUDIO_URL": ls.base_url,
        "LABEL_STUDIO_API_KEY": ls.create_personal_access_token(),
        "PRELABEL_FIT_DEBOUNCE": "3",
    }  # fmt: skip  (the four annotations make one fit)
    with PrelabelServer(tmp_path / "prelabel", env, workers=1) as server:
        project = ls.create_project("prelabel closing loop", CHOICES)
        colours = [RED, BLUE, RED, BLUE, RED, BLUE, RED, BLUE]
        task_ids = ls.import_files(project["id"], [coloured_file(tmp_path / f"{i}.png", c, i) for i, c in
                                                   enumerate(colours)])  # fmt: skip
        extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))},
                 "active_learning": {"strategy": "margin", "repredict": 2}}  # fmt: skip
        ls.add_ml_backend(project["id"], server.url, title="prelabel", extra_params=extra)
        ls.retrieve_predictions(project["id"])
        scores = {t: ls.predictions(t)[0]["score"] for t in task_ids}
        (base,) = versions(server, project["id"])
        for task_id, rgb in zip(task_ids[:4], colours[:4], strict=True):
            ls.create_annotation(task_id, [{"from_name": "colour", "to_name": "image", "type": "choices",
                                            "value": {"choices": ["Red" if rgb == RED else "Blue"]}}])  # fmt: skip

        def loop_jobs() -> list[dict]:
            jobs = requests.get(f"{server.url}/jobs", timeout=10).json()["jobs"]
            return [j for j in jobs if j["origin"] == "active_learning" and j["state"] == "done"]

        wait_for(lambda: bool(loop_jobs()), 120, server.log_tail)
        (job,) = loop_jobs()
        assert job["model_version"] == f"{base}-fit1" and job["predicted"] == 2, job
        expected = sorted(task_ids[4:], key=lambda t: (scores[t], t))[:2]  # the two lowest of the unannotated
        assert job["filter"]["task_ids"] == sorted(expected)
        for task_id in task_ids[4:]:
            newest = max(ls.predictions(task_id), key=lambda p: p["id"])
            assert (newest["model_version"] == job["model_version"]) == (task_id in expected)
        assert ls._json("GET", f"/api/projects/{project['id']}")["model_version"] == job["model_version"]
        views = ls._json("GET", "/api/dm/views", params={"project": project["id"]})
        (view,) = [v for v in views if v["data"].get("title") == LABEL_NEXT]
        listed = ls._json("GET", "/api/tasks", params={"project": project["id"], "view": view["id"]})
        listed = [t["id"] for t in (listed["tasks"] if isinstance(listed, dict) else listed)]
        fresh = {t: max(ls.predictions(t), key=lambda p: p["id"])["score"] for t in expected}
        assert sorted(listed) == task_ids[4:]
        assert [t for t in listed if t in fresh] == sorted(fresh, key=fresh.get)  # ordered by the new version
