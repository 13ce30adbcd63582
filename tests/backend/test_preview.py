"""/preview: a project's first tasks predicted with its settings (or trial ones), nothing written to Label Studio."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import request
from werkzeug.serving import make_server

from backend.app import create_app
from backend.cli import main
from backend.settings import ServerSettings
from tests.backend.refine.colour_models import COLOURS, ColourDetector
from tests.backend.refine.test_stages import CONFIG, PROMPTS, canvas, paint, uri
from tests.helpers import LocalServer


def image(squares: int) -> str:
    pixels = canvas(300, 200)
    for i in range(squares):
        paint(pixels, (20 + 40 * i, 20, 40 + 40 * i, 40), COLOURS["red"])
    paint(pixels, (20, 120, 40, 140), COLOURS["green"])
    return uri(pixels)


@pytest.fixture
def label_studio() -> Any:
    """A Label Studio answering the task list of project 3 (tasks 1-3) and recording every call."""
    with LocalServer() as ls:
        ls.calls = []
        tasks = [{"id": i, "data": {"image": image(i)}, "annotations": [], "predictions": []} for i in (1, 2, 3)]

        @ls.app.route("/<path:path>", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
        def any_call(path: str) -> Any:
            ls.calls.append((request.method, f"/{path}", dict(request.args)))
            if path == "api/tasks" and request.args.get("project") == "3":
                return {"tasks": tasks[: int(request.args["page_size"])], "total": 3}
            return {"detail": "not found"}, 404

        yield ls


def client_for(tmp_path: Path, ls_url: str | None) -> Any:
    settings = ServerSettings(model_dir=tmp_path, preload_projects=0, label_studio_url=ls_url,
                              label_studio_api_key="token" if ls_url else None,
                              media_allowed_hosts=frozenset({"127.0.0.1"}))  # fmt: skip
    client = create_app(settings).test_client()
    extra = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name}}
    assert (
        client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG, "extra_params": extra}).status_code
        == 200
    )
    return client


def test_preview_predicts_the_first_tasks_and_summarises_scores_per_label(tmp_path: Path, label_studio) -> None:
    client = client_for(tmp_path, label_studio.url)
    response = client.get("/preview?project=3&tasks=2")
    assert response.status_code == 200, response.json
    body = response.json
    assert [(t["id"], t["regions"]) for t in body["tasks"]] == [(1, 2), (2, 3)]  # 1 + 2 red squares, 1 green each
    car, person = body["labels"]["label"]["Car"], body["labels"]["label"]["Person"]
    histogram = [0] * 8 + [3, 0]  # every square scores 0.8: the 0.8-0.9 bin
    assert car == {"count": 3, "min": 0.8, "p25": 0.8, "median": 0.8, "p75": 0.8, "max": 0.8, "histogram": histogram}
    assert person["count"] == 2 and body["failed"] == {}
    assert body["model_version"] == client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG,
        "extra_params": {"prompts": PROMPTS, "detection": {"model": ColourDetector.name}}}).json["model_version"]  # fmt: skip
    assert all(method == "GET" for method, _, _ in label_studio.calls)  # nothing written to Label Studio


def test_trial_settings_are_used_but_not_saved(tmp_path: Path, label_studio) -> None:
    client = client_for(tmp_path, label_studio.url)
    trial = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name, "score": 0.35}}
    body = client.post("/preview", json={"project": 3, "tasks": 1, "extra_params": trial}).json
    assert body["labels"]["label"]["Car"]["max"] == 0.35 and body["labels"]["label"]["Car"]["histogram"][3] == 1
    again = client.get("/preview?project=3&tasks=1").json
    assert again["labels"]["label"]["Car"]["max"] == 0.8  # the project's own settings are unchanged


@pytest.mark.parametrize(
    ("query", "message"),
    [("project=9", "project 9 is not connected to this backend"), ("tasks=3", "preview needs 'project'"),
     ("project=3&tasks=0", "'tasks' must be a number of tasks from 1 to 50"),
     ("project=3&task=2", "unknown key 'task'")],
)  # fmt: skip
def test_mistakes_are_named(tmp_path: Path, label_studio, query: str, message: str) -> None:
    response = client_for(tmp_path, label_studio.url).get(f"/preview?{query}")
    assert response.status_code == 400 and message in response.json["error"]


def test_bad_trial_settings_are_named(tmp_path: Path, label_studio) -> None:
    response = client_for(tmp_path, label_studio.url).post(
        "/preview", json={"project": 3, "extra_params": {"detection": {"tiling": "sometimes"}}}
    )
    assert response.status_code == 400 and 'tiling must be "auto"' in response.json["error"]


def test_without_label_studio_credentials_the_preview_says_what_to_set(tmp_path: Path) -> None:
    response = client_for(tmp_path, None).get("/preview?project=3")
    assert response.status_code == 400 and "LABEL_STUDIO_URL" in response.json["error"]


@pytest.fixture
def served(tmp_path: Path, label_studio) -> Any:
    """prelabel itself on loopback (set up for project 3), for the ``prelabel preview`` command to call."""
    app = client_for(tmp_path, label_studio.url).application
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_the_command_prints_one_row_per_label(served: str, capsys) -> None:
    assert main(["preview", "--project", "3", "--tasks", "2", "--server", served]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(": 2 of 2 tasks predicted, 5 regions")
    assert lines[1].split() == [
        "control",
        "label",
        "count",
        "min",
        "p25",
        "median",
        "p75",
        "max",
        "scores",
        "0",
        "→",
        "1",
    ]
    assert lines[2].split()[:8] == ["label", "Car", "3", "0.80", "0.80", "0.80", "0.80", "0.80"]
    assert lines[2].endswith(" " * 8 + "█")  # all three in the 0.8-0.9 bin, the 0.9-1 bin empty (stripped)
    assert lines[3].split()[:3] == ["label", "Person", "2"] and len(lines) == 4


def test_the_command_tries_settings_from_a_file_and_names_server_errors(served: str, tmp_path: Path, capsys) -> None:
    trial = tmp_path / "trial.json"
    trial.write_text(json.dumps({"prompts": PROMPTS, "detection": {"model": ColourDetector.name, "score": 0.35}}))
    assert main(["preview", "--project", "3", "--tasks", "1", "--server", served, "--extra-params", f"@{trial}"]) == 0
    car = capsys.readouterr().out.splitlines()[2].split()
    assert car[:8] == ["label", "Car", "1", "0.35", "0.35", "0.35", "0.35", "0.35"] and car[8] == "█"  # 0.3-0.4 bin
    assert main(["preview", "--project", "9", "--server", served]) == 1
    assert "400: project 9 is not connected to this backend" in capsys.readouterr().err
    assert main(["preview", "--project", "3", "--server", served, "--extra-params", "{not json"]) == 2
    assert "--extra-params" in capsys.readouterr().err
