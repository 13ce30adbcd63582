"""A retrieve too large for its time: the tasks finished in time are answered, the rest go to a bulk job."""

from __future__ import annotations

from pathlib import Path

from backend import service as service_module
from backend.runner import RequestBudget
from tests.backend.jobs.conftest import PROJECT, PROJECT_ID, FakeLabelStudio, make_client, regions
from tests.helpers import make_task


class FirstChunkOnly(RequestBudget):
    """A budget that runs out after the first chunk (the runner's first chunk is 4 tasks)."""

    def stop_reason(self, next_tasks: int, seconds_per_task: float) -> str | None:
        self.asked = getattr(self, "asked", 0) + 1
        return None if self.asked == 1 else "the request's time budget ran out"


def test_unfinished_tasks_get_no_answer_and_a_job_writes_them(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    monkeypatch.setattr(service_module, "RequestBudget", FirstChunkOnly)
    tasks = [make_task(i, fake_ls.tasks[i]["data"]["image"]) for i in range(1, 7)]
    results = client.post("/predict", json={"project": PROJECT, "tasks": tasks}).json["results"]
    assert [bool(r) for r in results] == [True] * 4 + [False] * 2
    assert results[4:] == [[], []]  # no prediction: Label Studio stores nothing for them, nothing final
    (job,) = client.get("/jobs").json["jobs"]
    assert (job["origin"], job["filter"]["task_ids"], job["state"]) == ("retrieve", [5, 6], "queued")

    # while the job holds them, another retrieve leaves them to it
    again = client.post("/predict", json={"project": PROJECT, "tasks": tasks[4:]}).json["results"]
    assert again == [[], []] and len(client.get("/jobs").json["jobs"]) == 1

    done = client.service.jobs.run_next()
    assert done.state == "done" and done.predicted == 2
    stored = fake_ls.per_task()
    assert sorted(stored) == [5, 6]
    for task_id, (entry,) in stored.items():
        assert entry["model_version"] == results[0]["model_version"]
        assert regions(entry) == fake_ls.expected[task_id]
    page = client.get("/").text
    assert f"bulk job {job['id']} predicts them" in page
    assert "2/2: 2 predicted, 0 skipped, 0 failed" in page
    assert client.service.jobs.store.pending_tasks(PROJECT_ID) == set()


def test_no_handoff_when_turned_off(tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch, handoff=False)
    monkeypatch.setattr(service_module, "RequestBudget", FirstChunkOnly)
    tasks = [make_task(i, fake_ls.tasks[i]["data"]["image"]) for i in range(1, 7)]
    results = client.post("/predict", json={"project": PROJECT, "tasks": tasks}).json["results"]
    assert results[4:] == [[], []] and client.get("/jobs").json["jobs"] == []


def test_odd_task_ids_are_not_held_and_do_not_break_predict(
    tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch
) -> None:
    client = make_client(tmp_path, fake_ls.url, monkeypatch)
    client.post("/jobs", json={"project": PROJECT_ID, "task_ids": [1]})  # a job holds task 1
    tasks = [{**make_task(1, fake_ls.tasks[1]["data"]["image"]), "id": [1]},
             {**make_task(2, fake_ls.tasks[2]["data"]["image"]), "id": {"1": 1}}]  # fmt: skip
    answer = client.post("/predict", json={"project": PROJECT, "tasks": tasks})
    assert answer.status_code == 200 and all(answer.json["results"]), answer.json
