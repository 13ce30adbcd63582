"""A Label Studio stand-in for bulk jobs: the task list API with the Data Manager filters jobs send, views, and
prediction imports, recording every prediction it stores; and a server whose job loop the test drives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import request

from backend.app import create_app
from backend.jobs.loop import JobLoop
from backend.settings import ServerSettings
from tests.backend.refine.colour_models import COLOURS, ColourDetector
from tests.backend.refine.test_stages import CONFIG, PROMPTS, canvas, paint, uri
from tests.helpers import LocalServer

PROJECT_ID = 3
PROJECT = "3.1700000000"
EXTRA = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name}}


def squares_image(red: int, green: int) -> str:
    """An image with ``red`` red squares (Car) and ``green`` green ones (Person)."""
    pixels = canvas(300, 120)
    for i in range(red):
        paint(pixels, (10 + 40 * i, 10, 30 + 40 * i, 30), COLOURS["red"])
    for i in range(green):
        paint(pixels, (10 + 40 * i, 70, 30 + 40 * i, 90), COLOURS["green"])
    return uri(pixels)


class FakeLabelStudio(LocalServer):
    """Tasks 1..n of project 3; ``expected[id]`` is (red, green) squares painted on each task's image."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.tasks: dict[int, dict[str, Any]] = {}
        self.expected: dict[int, tuple[int, int]] = {}
        for task_id in range(1, n + 1):
            red, green = task_id % 3, (task_id // 3) % 2
            self.expected[task_id] = (red, green)
            self.tasks[task_id] = {"id": task_id, "data": {"image": squares_image(red, green)}, "annotations": [],
                                   "predictions": [], "total_annotations": 0, "cancelled_annotations": 0}  # fmt: skip
        self.views: dict[int, dict[str, Any]] = {}
        self.stored: list[dict[str, Any]] = []  # every prediction stored, in order
        self.reads = 0
        self.fail_reads = 0  # answer this many task reads with 503
        self.fail_writes_after_storing = 0  # store this many imports, then answer 500 (the answer is lost)
        app = self.app

        @app.get("/api/tasks")
        def tasks() -> Any:
            self.reads += 1
            if self.fail_reads:
                self.fail_reads -= 1
                return {"detail": "busy"}, 503
            assert request.args["project"] == str(PROJECT_ID) and request.args["fields"] == "all"
            query = json.loads(request.args["query"])
            assert query["ordering"] == ["tasks:id"]
            found = [t for t in self.tasks.values() if self._selected(t, query)]
            size = int(request.args["page_size"])
            start = (int(request.args["page"]) - 1) * size
            return {"tasks": [self._as_listed(t) for t in found[start : start + size]], "total": len(found)}

        @app.get("/api/dm/views/<int:view>/")
        def view(view: int) -> Any:
            return self.views.get(view, ({"detail": "Not found."}, 404))

        @app.get("/api/projects/<int:project>")
        def project(project: int) -> Any:
            return {"id": project, "label_config": CONFIG} if project == PROJECT_ID else ({"detail": "nope"}, 404)

        @app.get("/api/ml")
        def ml_backends() -> Any:
            return [{"id": 1, "project": PROJECT_ID, "extra_params": json.dumps(EXTRA)}]

        @app.post("/api/projects/<int:project>/import/predictions")
        def import_predictions(project: int) -> Any:
            assert project == PROJECT_ID
            body = request.get_json()
            for item in body:
                self.stored.append(item)
                self.tasks[item["task"]]["predictions"].append({"model_version": item["model_version"]})
            if self.fail_writes_after_storing:
                self.fail_writes_after_storing -= 1
                return {"detail": "gateway timeout"}, 500
            return {"created": len(body)}, 201

    def _as_listed(self, task: dict[str, Any]) -> dict[str, Any]:
        return {**task, "total_predictions": len(task["predictions"])}

    def _selected(self, task: dict[str, Any], query: dict[str, Any]) -> bool:
        selected = query["selectedItems"]
        if not selected["all"] and task["id"] not in selected["included"]:
            return False
        assert query["filters"]["conjunction"] == "and"
        for item in query["filters"]["items"]:
            value = self._as_listed(task)[item["filter"].removeprefix("filter:tasks:")]
            if item["operator"] == "greater" and not value > item["value"]:
                return False
            if item["operator"] == "equal" and value != item["value"]:
                return False
        return True

    def annotate(self, task_id: int, cancelled: bool = False) -> None:
        self.tasks[task_id]["annotations"].append({"id": task_id, "was_cancelled": cancelled})
        self.tasks[task_id]["cancelled_annotations" if cancelled else "total_annotations"] += 1

    def per_task(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for item in self.stored:
            out.setdefault(item["task"], []).append(item)
        return out


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio(10) as ls:
        yield ls


def make_client(
    tmp_path: Path, ls_url: str, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any] = EXTRA, **overrides: Any
) -> Any:
    """A server for project 3 whose job loop does not run by itself (tests call ``run_next``)."""
    monkeypatch.setattr(JobLoop, "start", lambda self: None)
    overrides = {"job_page_size": 4, **overrides}
    settings = ServerSettings(model_dir=tmp_path / "model_dir", preload_projects=0, label_studio_url=ls_url,
                              label_studio_api_key="token", **overrides)  # fmt: skip
    client = create_app(settings).test_client()
    answer = client.post("/setup", json={"project": PROJECT, "schema": CONFIG, "extra_params": extra})
    assert answer.status_code == 200, answer.json
    client.model_version = answer.json["model_version"]
    client.service = client.application.extensions["prelabel"]
    return client


def regions(entry: dict[str, Any]) -> tuple[int, int]:
    """(Car, Person) regions of a stored prediction."""
    labels = [r["value"]["rectanglelabels"][0] for r in entry["result"]]
    return labels.count("Car"), labels.count("Person")
