"""The closing loop: a new version re-predicts the most uncertain unlabelled tasks as a job; the tab then re-orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from flask import request

from backend.ls_client import LabelStudioClient
from backend.ranking import closing_loop
from backend.ranking.closing_loop import ORIGIN, most_uncertain
from backend.ranking.tabs import LABEL_NEXT
from tests.backend.jobs.conftest import CONFIG, EXTRA, PROJECT_ID, FakeLabelStudio, make_client

# task -> its predictions as (prediction id, model version, score); tasks 2 and 5 are annotated
PREDICTIONS = {1: [(10, "v1", 0.9)], 3: [(30, "v1", 0.2)], 4: [(40, "other", 0.01)], 6: [(60, "v1", 0.1)],
               7: [(70, "v1", 0.05), (71, "v1", 0.6)], 8: [(80, "v1", 0.7)], 9: [(90, "v1", 0.8)],
               10: [(100, "v1", 0.3)]}  # fmt: skip


@pytest.fixture
def scored_ls() -> Any:
    """Ten tasks with the predictions above, the tab and project APIs the loop uses, recording their calls."""
    with FakeLabelStudio(10) as ls:
        for task_id, found in PREDICTIONS.items():
            ls.tasks[task_id]["predictions"] = [{"id": i, "model_version": v, "score": s} for i, v, s in found]
        ls.annotate(2)
        ls.annotate(5, cancelled=True)
        ls.views_made, ls.project_version = [], "prelabel"  # Label Studio sets the backend's title on connecting

        @ls.app.route("/api/dm/views", methods=["GET", "POST"])
        @ls.app.route("/api/dm/views/", methods=["GET", "POST"])
        def views_api() -> Any:
            if request.method == "POST":
                ls.views_made.append(request.get_json())
                return {"id": 7, **request.get_json()}, 201
            return [{"id": 7, **v} for v in ls.views_made]

        @ls.app.route("/api/projects/<int:project>/", methods=["GET", "PATCH"])
        def project_api(project: int) -> Any:
            if request.method == "PATCH":
                ls.project_version = request.get_json()["model_version"]
            return {"id": project, "model_version": ls.project_version}

        yield ls


def api(ls: FakeLabelStudio) -> LabelStudioClient:
    return LabelStudioClient(ls.url, "token", requests.Session())


def test_the_lowest_newest_scores_of_this_backend_come_first(scored_ls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing_loop, "_PAGE", 3)  # four pages
    # unannotated: 1 .9, 3 .2, 4 never by v1, 6 .1, 7 .6 (its newest), 8 .7, 9 .8, 10 .3
    assert most_uncertain(api(scored_ls), PROJECT_ID, 4, {"v1"}) == [4, 6, 3, 10]
    assert most_uncertain(api(scored_ls), PROJECT_ID, 20, {"v1"}) == [4, 6, 3, 10, 7, 8, 9, 1]
    assert most_uncertain(api(scored_ls), PROJECT_ID, 2, {"v1", "other"}) == [4, 6]  # 4's 0.01 is now ours


def test_a_new_version_queues_its_most_uncertain_tasks_and_the_tab_follows_it(
    tmp_path: Path, scored_ls, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_client(tmp_path, scored_ls.url, monkeypatch, extra={**EXTRA, "detection": {**EXTRA["detection"],
                                                                                         "score": 0.35}})  # fmt: skip
    for task in scored_ls.tasks.values():  # the stored predictions are this backend's, of its earlier version
        task["predictions"] = [{**p, "model_version": old.model_version} for p in task["predictions"]
                               if p["model_version"] == "v1"]  # fmt: skip
    extra = {**EXTRA, "active_learning": {"repredict": 3}}
    answer = old.post("/setup", json={"project": "3.1700000000", "schema": CONFIG, "extra_params": extra})
    service, version = old.service, answer.json["model_version"]
    assert version != old.model_version
    record = service.store.find(PROJECT_ID)

    service._repredict(record, version)
    (job,) = service.jobs.store.active(PROJECT_ID)
    assert job.origin == ORIGIN and job.filter.task_ids == (3, 4, 6)  # 4 never predicted, 6 at 0.1, 3 at 0.2
    service._repredict(record, version)  # the same tasks again: the unfinished job answers
    assert len(service.jobs.store.active(PROJECT_ID)) == 1

    done = service.jobs.run_next()
    assert done.state == "done" and sorted(p["task"] for p in scored_ls.stored) == [3, 4, 6]
    assert {p["model_version"] for p in scored_ls.stored} == {version}
    assert scored_ls.project_version == version  # the scores the tab orders by are the version's
    assert [v["data"]["title"] for v in scored_ls.views_made] == [LABEL_NEXT]


def test_off_by_default_and_bounded(tmp_path: Path, scored_ls, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(tmp_path, scored_ls.url, monkeypatch)
    client.service._repredict_after_fit(client.service.store.find(PROJECT_ID), client.model_version)
    assert client.service.jobs.store.active(PROJECT_ID) == [] and scored_ls.reads == 0
    answer = client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG,
                                         "extra_params": {**EXTRA, "active_learning": {"repredict": 10001}}})  # fmt: skip
    assert answer.status_code == 400 and "active_learning.repredict must be from 0 to 10000" in answer.json["error"]
