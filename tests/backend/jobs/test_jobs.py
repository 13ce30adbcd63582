"""Bulk jobs against a Label Studio stand-in: every task once, people's work untouched, resumable, cancellable."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.jobs.store import Counts
from tests.backend.jobs.conftest import PROJECT_ID, FakeLabelStudio, make_client, regions


def test_a_job_predicts_every_unannotated_task_once_in_pages(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    fake_ls.annotate(2)
    fake_ls.annotate(5, cancelled=True)  # a skipped task is people's work too
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    answer = client.post("/jobs", json={"project": PROJECT_ID})
    assert answer.status_code == 201 and answer.json["state"] == "queued"
    job = client.service.jobs.run_next()
    assert job is not None and job.state == "done"

    stored = fake_ls.per_task()
    assert sorted(stored) == [1, 3, 4, 6, 7, 8, 9, 10]
    for task_id, entries in stored.items():
        (entry,) = entries
        assert entry["model_version"] == client.model_version
        assert regions(entry) == fake_ls.expected[task_id], task_id  # the squares painted on its image
    body = client.get(f"/jobs/{job.id}").json
    assert (body["total"], body["predicted"], body["skipped"], body["failed"]) == (10, 8, 2, 0)
    assert fake_ls.reads == 4  # pages of 4 after the cursor: 1-4, 5-8, 9-10, then an empty one

    metrics = client.get("/metrics").text
    assert 'prelabel_jobs_total{state="done"}' in metrics
    assert 'prelabel_job_tasks_total{outcome="predicted"}' in metrics


def test_a_second_job_skips_what_holds_a_prediction_of_the_version(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    fake_ls.tasks[4]["predictions"].append({"model_version": "someone-else-v1"})  # another version: predicted
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [3, 4]})
    client.service.jobs.run_next()
    client.post("/jobs", json={"project": PROJECT_ID})
    job = client.service.jobs.run_next()
    assert (job.predicted, job.skipped) == (8, 2)
    assert all(len(entries) == 1 for entries in fake_ls.per_task().values()) and len(fake_ls.per_task()) == 10


def test_without_predictions_and_views_narrow_the_tasks(tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch) -> None:
    fake_ls.tasks[1]["predictions"].append({"model_version": "old"})
    fake_ls.views[7] = {"id": 7, "project": PROJECT_ID, "data": {"filters": {"conjunction": "and", "items": [
        {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": 6}]}}}  # fmt: skip
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    client.post("/jobs", json={"project": PROJECT_ID, "without_predictions": True, "task_ids": [1, 2]})
    assert client.service.jobs.run_next().predicted == 1
    client.post("/jobs", json={"project": PROJECT_ID, "view": 7})
    assert client.service.jobs.run_next().predicted == 4
    assert sorted(fake_ls.per_task()) == [2, 7, 8, 9, 10]


def test_a_job_killed_after_writing_a_page_resumes_without_duplicates(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    job_id = client.post("/jobs", json={"project": PROJECT_ID}).json["id"]
    store = client.service.jobs.store
    real_advance = store.advance
    pages = []

    def die_on_second_page(*args, **kwargs):
        pages.append(args)
        if len(pages) == 2:
            raise KeyboardInterrupt  # the process dies between the write and the record of page 2
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(store, "advance", die_on_second_page)
    with pytest.raises(KeyboardInterrupt):
        client.service.jobs.run_next()
    monkeypatch.setattr(store, "advance", real_advance)
    assert store.get(job_id).state == "running" and store.get(job_id).cursor == 4
    assert len(fake_ls.stored) == 8  # page 2 reached Label Studio

    job = client.service.jobs.run_next()  # a restart claims it again
    assert job.id == job_id and job.state == "done"
    assert sorted(fake_ls.per_task()) == list(range(1, 11))
    assert all(len(entries) == 1 for entries in fake_ls.per_task().values())
    assert (job.predicted, job.skipped) == (6, 4)  # page 2 is found already predicted


def test_a_lost_write_answer_and_a_busy_label_studio_are_retried_without_duplicates(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    client.service.jobs.runner.retry_pauses = (0.01, 0.01)
    fake_ls.fail_reads = 2
    fake_ls.fail_writes_after_storing = 1
    client.post("/jobs", json={"project": PROJECT_ID})
    job = client.service.jobs.run_next()
    assert job.state == "done"
    assert all(len(entries) == 1 for entries in fake_ls.per_task().values()) and len(fake_ls.per_task()) == 10


def test_a_label_studio_down_for_good_fails_the_job_with_the_reason(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    client.service.jobs.runner.retry_pauses = (0.01,)
    fake_ls.fail_reads = 100
    job_id = client.post("/jobs", json={"project": PROJECT_ID}).json["id"]
    client.service.jobs.run_next()
    body = client.get(f"/jobs/{job_id}").json
    assert body["state"] == "failed" and "HTTP 503" in body["error"] and "2 tries" in body["error"]
    assert fake_ls.reads == 2


def test_a_task_whose_image_fails_is_reported_and_gets_no_prediction(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    fake_ls.tasks[6]["data"]["image"] = "data:image/png;base64,bm90IGFuIGltYWdl"  # "not an image"
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    job_id = client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [5, 6, 99]}).json["id"]
    client.service.jobs.run_next()
    body = client.get(f"/jobs/{job_id}").json
    assert (body["state"], body["predicted"], body["failed"]) == ("done", 1, 2)
    reasons = {f["task"]: f["reason"] for f in body["failures"]}
    assert "image 'image'" in reasons[6] and reasons[99] == f"task 99 is not in project {PROJECT_ID}"
    assert sorted(fake_ls.per_task()) == [5]


def test_cancel_stops_a_queued_job_at_once_and_a_running_one_after_its_batch(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    queued = client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [1]}).json["id"]
    assert client.delete(f"/jobs/{queued}").json["state"] == "cancelled"
    assert client.service.jobs.run_next() is None and fake_ls.stored == []

    running = client.post("/jobs", json={"project": PROJECT_ID}).json["id"]
    store = client.service.jobs.store
    real_advance = store.advance

    def cancel_after_first_page(job_id: int, worker: str, cursor: int, counts: Counts, **kw):
        recorded = real_advance(job_id, worker, cursor, counts, **kw)
        client.delete(f"/jobs/{job_id}")
        return recorded

    monkeypatch.setattr(store, "advance", cancel_after_first_page)
    job = client.service.jobs.run_next()
    assert (job.id, job.state, job.predicted) == (running, "cancelled", 4)
    assert sorted(fake_ls.per_task()) == [1, 2, 3, 4]
    assert client.delete("/jobs/999").status_code == 404 and client.get("/jobs/999").status_code == 404


def test_posting_the_same_job_again_answers_the_unfinished_one(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    first = client.post("/jobs", json={"project": PROJECT_ID})
    again = client.post("/jobs", json={"project": PROJECT_ID})
    assert (first.status_code, again.status_code) == (201, 200) and first.json["id"] == again.json["id"]
    other = client.post("/jobs", json={"project": PROJECT_ID, "without_annotations": False})
    assert other.status_code == 201 and other.json["id"] != first.json["id"]
    assert [j["id"] for j in client.get("/jobs").json["jobs"]] == [other.json["id"], first.json["id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "a job needs 'project'"),
        ({"project": 8}, "project 8 is not connected"),
        ({"project": PROJECT_ID, "tasks": [1]}, "unknown key 'tasks'"),
        ({"project": PROJECT_ID, "task_ids": "1,2"}, "'task_ids' must be a list"),
        ({"project": PROJECT_ID, "view": "all"}, "'view' must be a Data Manager tab id"),
        ({"project": PROJECT_ID, "without_annotations": "no"}, "'without_annotations' must be true or false"),
    ],
)
def test_bad_job_requests_are_refused_with_the_reason(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch, body: dict, message: str
) -> None:
    answer = make_client(tmp_path, fake_ls.url, monkeypatch).post("/jobs", json=body)
    assert answer.status_code == 400 and message in answer.json["error"]


def test_job_routes_are_protected_like_the_others(tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch) -> None:
    from backend.app import create_app
    from backend.jobs.loop import JobLoop
    from backend.settings import ServerSettings

    monkeypatch.setattr(JobLoop, "start", lambda self: None)
    settings = ServerSettings(model_dir=tmp_path, preload_projects=0, basic_auth_user="u", basic_auth_pass="p")
    client = create_app(settings).test_client()
    assert client.post("/jobs", json={"project": PROJECT_ID}).status_code == 401
    assert client.get("/jobs/1").status_code == 401 and client.delete("/jobs/1").status_code == 401
    assert client.get("/jobs/1", auth=("u", "p")).status_code == 404


def test_a_view_of_another_project_or_with_or_filters_fails_the_job_with_the_reason(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    item = {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": 1}
    fake_ls.views[8] = {"id": 8, "project": PROJECT_ID, "data": {"filters": {"conjunction": "or", "items": [item] * 2}}}
    fake_ls.views[9] = {"id": 9, "project": PROJECT_ID + 1, "data": {}}
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    for view, reason in [(8, "view 8 joins its filters with OR"), (9, f"view 9 is not a tab of project {PROJECT_ID}")]:
        job_id = client.post("/jobs", json={"project": PROJECT_ID, "view": view}).json["id"]
        client.service.jobs.run_next()
        body = client.get(f"/jobs/{job_id}").json
        assert body["state"] == "failed" and reason in body["error"]
    assert fake_ls.stored == []


def test_a_job_scores_tasks_as_predict_does_ranking_included(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    import dataclasses

    from tests.backend.jobs.conftest import EXTRA
    from tests.backend.refine.colour_models import COLOURS
    from tests.backend.refine.test_stages import canvas, paint, uri

    both, red = canvas(400, 300), canvas(400, 300)
    paint(both, (100, 100, 140, 140), COLOURS["red"])
    paint(both, (200, 100, 240, 140), COLOURS["green"])
    paint(red, (100, 100, 140, 140), COLOURS["red"])
    fake_ls.tasks[1]["data"]["image"], fake_ls.tasks[2]["data"]["image"] = uri(both), uri(red)
    client = make_client(tmp_path, fake_ls.url, monkeypatch,
                         extra={**EXTRA, "active_learning": {"strategy": "disagreement"}})  # fmt: skip

    def learned(record, plan):  # a "fit" whose Person threshold drops the green box
        (target,) = plan.targets
        post = dataclasses.replace(target.post, label_thresholds={"Person": 0.9})
        return dataclasses.replace(plan, targets=(dataclasses.replace(target, post=post),),
                                   model_version=f"{plan.model_version}-fit1")  # fmt: skip

    client.service.learner.serve = learned
    client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [1, 2]})
    client.service.jobs.run_next()
    stored = fake_ls.per_task()
    # both: learned {Car} against zero-shot {Car, Person}: 2 x 1 / (1 + 2); red: the same box on both sides
    assert [stored[1][0]["score"], stored[2][0]["score"]] == pytest.approx([2 / 3, 1.0])
    assert stored[1][0]["model_version"].endswith("-fit1")


def test_failure_reasons_keep_no_presigned_signature(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ls.tasks[6]["data"]["image"] = "http://127.0.0.1:9/x.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef"
    client = make_client(tmp_path, fake_ls.url, monkeypatch, media_allowed_hosts=frozenset({"127.0.0.1"}))
    job_id = client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [5, 6]}).json["id"]
    client.service.jobs.run_next()
    body = client.get(f"/jobs/{job_id}").json
    assert [f["task"] for f in body["failures"]] == [6] and "[REDACTED]" in body["failures"][0]["reason"]
    for text in (str(body), client.get("/").text):
        assert "deadbeef" not in text and "AKIAEXAMPLE" not in text
