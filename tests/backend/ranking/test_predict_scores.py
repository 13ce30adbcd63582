"""Strategies through /predict on models that read pixels (``colour_models``): ensemble members' disagreement, a
learned version against the zero-shot one, the model version; expected scores by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from backend.app import create_app
from backend.settings import ServerSettings
from tests.backend.refine.colour_models import COLOURS, ColourDetector
from tests.backend.refine.test_stages import CONFIG, PROMPTS, canvas, paint, uri
from tests.helpers import make_task


def client_for(tmp_path: Path):
    app = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0))
    return app, app.test_client()


def setup(client: Any, extra: dict[str, Any]) -> str:
    response = client.post("/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra})
    assert response.status_code == 200, response.json
    return response.json["model_version"]


def scores(client: Any, images: list) -> list[float]:
    tasks = [make_task(i, uri(image)) for i, image in enumerate(images)]
    response = client.post("/predict", json={"project": "1.1", "tasks": tasks})
    return [entry["score"] for entry in response.json["results"]]


def test_ensemble_disagreement_ranks_tasks_by_the_share_of_members_that_found_each_box(tmp_path: Path) -> None:
    big, small, empty = canvas(400, 300), canvas(400, 300), canvas(400, 300)
    paint(big, (100, 100, 300, 250), COLOURS["red"])  # shifted 15 px: IoU 185/215, one fused box of both members
    paint(small, (100, 100, 120, 120), COLOURS["red"])  # shifted 15 px: IoU 5/35, two boxes found by one each
    members = [{"model": ColourDetector.name}, {"model": f"{ColourDetector.name}.other", "shift": 15}]
    extra = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name, "models": members},
             "active_learning": {"strategy": "disagreement"}}  # fmt: skip
    _, client = client_for(tmp_path)
    setup(client, extra)
    assert scores(client, [big, small, empty]) == pytest.approx([1.0, 0.5, 1.0])
    extra["active_learning"] = {"strategy": "confidence"}  # the same boxes, mean score: 0.8 and 0.8 x 1 / 2
    setup(client, extra)
    assert scores(client, [big, small, empty]) == pytest.approx([0.8, 0.4, 0.0])


def test_learned_version_disagreeing_with_the_zero_shot_one_ranks_first(tmp_path: Path) -> None:
    both, red = canvas(400, 300), canvas(400, 300)
    paint(both, (100, 100, 140, 140), COLOURS["red"])
    paint(both, (200, 100, 240, 140), COLOURS["green"])
    paint(red, (100, 100, 140, 140), COLOURS["red"])
    app, client = client_for(tmp_path)
    service = app.extensions["prelabel"]
    base_version = setup(client, {"prompts": PROMPTS, "detection": {"model": ColourDetector.name},
                                  "active_learning": {"strategy": "disagreement"}})  # fmt: skip

    def learned(record: Any, plan: Any) -> Any:  # a "fit" whose Person threshold drops the green box
        (target,) = plan.targets
        post = dataclasses.replace(target.post, label_thresholds={"Person": 0.9})
        return dataclasses.replace(plan, targets=(dataclasses.replace(target, post=post),),
                                   model_version=f"{plan.model_version}-fit1")  # fmt: skip

    service.learner.serve = learned
    # both: learned {Car}, zero-shot {Car, Person}: 2 x 1 / (1 + 2); red: the same box on both sides
    assert scores(client, [both, red]) == pytest.approx([2 / 3, 1.0])
    assert base_version != setup(client, {"prompts": PROMPTS, "detection": {"model": ColourDetector.name}})


def test_the_default_ranking_keeps_the_model_version_and_others_change_it(tmp_path: Path) -> None:
    _, client = client_for(tmp_path)
    extra = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name}}
    plain = setup(client, extra)
    assert setup(client, {**extra, "active_learning": {"strategy": "confidence"}}) == plain
    assert setup(client, {**extra, "active_learning": {"strategy": "margin"}}) != plain
    refused = client.post("/setup", json={"project": "1.1", "schema": CONFIG,
                                          "extra_params": {"active_learning": {"strategy": "random"}}})  # fmt: skip
    assert refused.status_code == 400 and "active_learning.strategy" in refused.json["error"]


def test_label_next_says_why_it_cannot_make_the_tab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _, client = client_for(tmp_path)
    assert client.post("/label-next", query_string={"project": "x1"}).status_code == 400
    answer = client.post("/label-next", query_string={"project": "9"})
    assert answer.status_code == 400 and "project 9 is not connected" in answer.json["error"]
    from backend.cli import main

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main(["label-next", "--project", "9"]) == 2
    assert "LABEL_STUDIO_URL" in capsys.readouterr().err
