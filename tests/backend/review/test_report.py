"""The review report against a fake Label Studio: annotations by three people on five tasks, every number by hand.

Boxes are on a 100 x 100 image, so percent and pixel coordinates are the same and IoUs are simple fractions.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import request

import backend.learning.sync
from backend.app import create_app
from backend.cli import main
from backend.review.metrics import NO_ANSWER
from backend.review.refresh import ReviewRefresher
from backend.settings import ServerSettings
from tests.helpers import LocalServer


def box(label: str, x: float, y: float, w: float, h: float, score: float | None = None) -> dict[str, Any]:
    region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 100,
              "original_height": 100, "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}}  # fmt: skip
    return region if score is None else {**region, "score": score}


def choice(*labels: str) -> dict[str, Any]:
    return {"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": list(labels)}}


def prediction(pid: int, version: str, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": pid, "model_version": version, "result": result, "score": 0.5, "created_at": f"2025-01-0{pid % 9}"}


def annotation(aid: int, user: int, result: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": aid, "completed_by": user, "result": result, "was_cancelled": False, **extra}


PREDICTED_BOXES = [box("Car", 0, 0, 10, 10, 0.9), box("Car", 50, 50, 10, 10, 0.8), box("Person", 20, 20, 10, 10, 0.7)]
TASKS = [
    # alice halves the first car (IoU 0.5: still a match), deletes the second, keeps the person, adds one; bob keeps all
    {"id": 1, "data": {"image": "/data/upload/3/1.png"}, "predictions": [prediction(11, "v1", PREDICTED_BOXES)],
     "annotations": [
         annotation(101, 1, [box("Car", 0, 0, 10, 5), box("Person", 20, 20, 10, 10), box("Person", 70, 70, 10, 10)],
                    created_username="alice"),
         annotation(102, 2, [{k: v for k, v in r.items() if k != "score"} for r in PREDICTED_BOXES]),
     ]},
    # the model says Red (v1; an older v0 said Blue, the prediction alice started from), alice says Blue
    {"id": 2, "data": {"image": "/data/upload/3/2.png"},
     "predictions": [prediction(21, "v0", [choice("Blue")]), prediction(22, "v1", [choice("Red")])],
     "annotations": [annotation(201, 1, [choice("Blue")], created_username="alice", parent_prediction=21)]},
    # bob agrees; carol skipped the task
    {"id": 3, "data": {"image": "/data/upload/3/3.png"}, "predictions": [prediction(31, "v1", [choice("Red")])],
     "annotations": [annotation(301, 2, [choice("Red")]),
                     annotation(302, 3, [], was_cancelled=True, created_username="carol")]},
    # only v0 predicted this task
    {"id": 4, "data": {"image": "/data/upload/3/4.png"}, "predictions": [prediction(41, "v0", [choice("Red")])],
     "annotations": [annotation(401, 1, [choice("Red")], created_username="alice")]},
    # the model gave no answer, bob says Green
    {"id": 5, "data": {"image": "/data/upload/3/5.png"}, "predictions": [prediction(51, "v1", [])],
     "annotations": [annotation(501, 2, [choice("Green")])]},
]  # fmt: skip


@pytest.fixture
def label_studio(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Project 3's annotated tasks, two per page, and one ML backend serving ``ls.served``."""
    monkeypatch.setattr(backend.learning.sync, "PAGE_SIZE", 2)
    with LocalServer() as ls:
        ls.served = "v1"
        ls.pages = []

        @ls.app.get("/api/ml")
        def backends() -> Any:
            return json.dumps([{"id": 1, "model_version": ls.served}] if ls.served else [])

        ls.views = []
        ls.project_version = "prelabel"  # what connecting a backend leaves there: its title

        @ls.app.get("/api/dm/views")
        def views() -> Any:
            assert request.args["project"] == "3"
            return json.dumps(ls.views)

        @ls.app.post("/api/dm/views/")
        def create_view() -> Any:
            view = {"id": len(ls.views) + 1, "project": request.json["project"], "data": request.json["data"]}
            ls.views.append(view)
            return view, 201

        @ls.app.patch("/api/dm/views/<int:vid>/")
        def update_view(vid: int) -> Any:
            (view,) = [v for v in ls.views if v["id"] == vid]
            view["data"] = request.json["data"]
            return view

        @ls.app.route("/api/projects/3/", methods=["GET", "PATCH"])
        def project() -> Any:
            if request.method == "PATCH":
                ls.project_version = request.json["model_version"]
            return {"id": 3, "model_version": ls.project_version}

        @ls.app.get("/api/tasks")
        def tasks() -> Any:
            assert request.args["project"] == "3" and request.args["fields"] == "all"
            assert "total_annotations" in request.args["query"] and request.headers["Authorization"] == "Token t"
            page, size = int(request.args["page"]), int(request.args["page_size"])
            ls.pages.append(page)
            return {"tasks": TASKS[(page - 1) * size : page * size], "total": len(TASKS)}

        yield ls


def client_for(tmp_path: Path, ls_url: str, **settings: Any) -> Any:
    """A server that made v0 and v1 for project 3 (the versions the fake's backend serves)."""
    app = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, label_studio_url=ls_url,
                                    label_studio_api_key="t", **settings))  # fmt: skip
    for version in ("v0", "v1"):
        app.extensions["prelabel"].store.add_version("3.1700000000", version)
    return app.test_client()


def test_report_numbers_equal_a_hand_count(tmp_path: Path, label_studio: Any) -> None:
    response = client_for(tmp_path, label_studio.url).get("/report?project=3")
    assert response.status_code == 200, response.json
    report = response.json
    assert label_studio.pages == [1, 2, 3]
    assert report["model_version"] == "v1" and report["compared_versions"] == {"v1": 5}
    # alice t1, bob t1, alice t2, bob t3, bob t5; carol skipped; alice t4 has no v1 prediction
    assert (report["annotations"], report["tasks"]) == (5, 4)
    assert report["skipped"] == {"cancelled": 1, "no_prediction": 1, "unreadable": 0}
    rows = {(r["control"], r["label"]): r for r in report["labels"]}
    # Car: alice 1 of 2 kept (IoU 0.5), bob 2 of 2 (IoU 1): precision 3/4, recall 3/3, IoU (0.5 + 1 + 1) / 3
    assert rows["label", "Car"] == {"control": "label", "label": "Car", "kind": "objects", "predicted": 4,
                                    "annotated": 3, "matched": 3, "precision": 0.75, "recall": 1.0,
                                    "mean_iou": pytest.approx(2.5 / 3, abs=1e-4)}  # fmt: skip
    # Person: both keep it, alice adds one: precision 2/2, recall 2/3
    person = rows["label", "Person"]
    assert (person["precision"], person["recall"], person["mean_iou"]) == (1.0, pytest.approx(2 / 3, abs=1e-4), 1.0)
    # Red predicted on t2, t3 and annotated on t3; Blue and Green only annotated: no precision, recall 0
    red, blue, green = rows["colour", "Red"], rows["colour", "Blue"], rows["colour", "Green"]
    assert (red["predicted"], red["annotated"], red["matched"], red["precision"], red["recall"]) == (2, 1, 1, 0.5, 1)
    assert (blue["precision"], blue["recall"], green["precision"], green["recall"]) == (None, 0.0, None, 0.0)
    assert red["mean_iou"] is None and red["kind"] == "choices"
    (colour,) = report["choices"]
    assert (colour["compared"], colour["correct"], colour["accuracy"]) == (3, 1, pytest.approx(1 / 3, abs=1e-4))
    assert colour["annotated"] == ["Blue", "Green", "Red"]
    assert colour["predicted"] == ["Blue", "Green", "Red", NO_ANSWER]
    assert colour["matrix"] == [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    # agreement per annotation: alice t1 2 x 2 / 6, t2 0; bob t1 1, t3 1, t5 0
    people = {p["annotator"]: p for p in report["annotators"]}
    assert people["alice"] == {"annotator": "alice", "annotations": 2, "agreement": pytest.approx(1 / 3, abs=1e-4),
                               "unchanged": 0.0}  # fmt: skip
    assert people["user 2"] == {"annotator": "user 2", "annotations": 3, "agreement": pytest.approx(2 / 3, abs=1e-4),
                                "unchanged": pytest.approx(2 / 3, abs=1e-4)}  # fmt: skip
    assert report["agreement"] == pytest.approx((2 / 3 + 0 + 1 + 1 + 0) / 5, abs=1e-4)
    assert report["unchanged"] == 0.4
    worst = [(d["task"], d["annotator"], d["agreement"]) for d in report["disagreements"]]
    assert worst == [(2, "alice", 0.0), (5, "user 2", 0.0), (1, "alice", pytest.approx(2 / 3, abs=1e-4))]
    assert report["disagreements"][0]["url"] == f"{label_studio.url}/projects/3/data?task=2"


def test_another_version_or_the_prediction_each_annotator_started_from(tmp_path: Path, label_studio: Any) -> None:
    client = client_for(tmp_path, label_studio.url)
    older = client.get("/report?project=3&version=v0").json
    # t2 and t4 have a v0 prediction, both annotated as v0 said
    assert (older["annotations"], older["skipped"]["no_prediction"], older["agreement"]) == (2, 4, 1.0)
    label_studio.served = None  # no backend version known: alice's t2 is judged against v0 (she started from it)
    started = client.get("/report?project=3").json
    assert started["model_version"] is None and started["compared_versions"] == {"v1": 4, "v0": 2}
    assert {(d["task"], d["annotator"]) for d in started["disagreements"]} == {(1, "alice"), (5, "user 2")}


def test_html_report_draws_the_bars_and_the_confusion_matrix(tmp_path: Path, label_studio: Any) -> None:
    response = client_for(tmp_path, label_studio.url).get("/report.html?project=3")
    assert response.status_code == 200 and response.content_type.startswith("text/html")
    page = response.text
    car = page[page.index("<td>Car</td>") : page.index("</tr>", page.index("<td>Car</td>"))]
    assert "class='precision' x='0' y='2' width='150'" in car and "class='recall' x='0' y='18' width='200'" in car
    matrix = page[page.index("<table class='cm'>") :]
    assert re.search(r"<tr><th>Green</th>(<td[^>]*>0</td>){3}<td[^>]*>1</td></tr>", matrix)
    assert f"href='{label_studio.url}/projects/3/data?task=2'" in page and "<script" not in page


def test_report_sets_the_review_gauges(tmp_path: Path, label_studio: Any) -> None:
    client = client_for(tmp_path, label_studio.url)
    client.get("/report?project=3")
    text = client.get("/metrics").text
    car = 'prelabel_review_label{control="label",label="Car",metric="precision",model_version="v1",project="3"} 0.75'
    assert car in text
    assert 'prelabel_review_project{control="",metric="unchanged",model_version="v1",project="3"} 0.4' in text
    assert 'prelabel_review_project{control="colour",metric="accuracy",model_version="v1",project="3"}' in text
    # nothing to count: no sample, not a false 0
    assert 'label="Blue",metric="precision",model_version="v1"' not in text
    client.get("/report?project=3&version=guess")  # a version this server never made: no series of its own
    assert 'model_version="guess"' not in client.get("/metrics").text


def test_report_routes_are_protected_and_say_what_is_wrong(tmp_path: Path, label_studio: Any) -> None:
    locked = client_for(tmp_path / "a", label_studio.url, basic_auth_user="u", basic_auth_pass="p")
    assert locked.get("/report?project=3").status_code == 401
    assert locked.get("/report.html?project=3").status_code == 401
    assert locked.get("/report?project=3", auth=("u", "p")).status_code == 200
    client = client_for(tmp_path / "b", "http://127.0.0.1:9")  # nothing listens there
    assert client.get("/report?project=x").status_code == 400
    refused = client.get("/report?project=3")
    assert refused.status_code == 400 and "could not read project 3's annotations" in refused.json["error"]


def test_cli_prints_the_table_and_writes_the_page(
    tmp_path: Path, label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "t")
    assert main(["report", "--project", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("project 3, model version v1: 5 annotations of 4 tasks compared; agreement 0.53, ")
    assert "predictions accepted unchanged 40%" in out[0] and "1 skipped by the annotator" in out[0]
    assert out[2].split() == ["control", "label", "kind", "predicted", "annotated", "matched", "precision", "recall",
                              "mean", "IoU"]  # fmt: skip
    assert "label    Car     objects  4          3          3        0.75       1.00    0.83" in out
    assert "colour: accuracy 0.33 (1 of 3); rows annotated, columns predicted" in out
    assert main(["report", "--project", "3", "-o", str(tmp_path / "r.html")]) == 0
    assert "<svg" in (tmp_path / "r.html").read_text()
    monkeypatch.delenv("LABEL_STUDIO_URL")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert main(["report", "--project", "3"]) == 2
    assert "LABEL_STUDIO_URL" in capsys.readouterr().err


def test_polygons_are_matched_by_mask_iou() -> None:
    from backend.learning.events import Annotation
    from backend.review.fetch import Pair, Skipped
    from backend.review.metrics import review_report

    def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
        return {"from_name": "shape", "to_name": "image", "type": "polygonlabels", "original_width": 100,
                "original_height": 100, "score": 0.9,
                "value": {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "polygonlabels": ["Leaf"]}}  # fmt: skip

    # annotated 40 x 30 inside the predicted 40 x 40: IoU 1200 / 1600
    kept = Annotation(id=1, task_id=1, task_data={}, result=(square(10, 10, 50, 40),), completed_by=1)
    report = review_report([Pair(kept, "user 1", (square(10, 10, 50, 50),), "v1")], Skipped(), project=1,
                           version="v1", link=str)  # fmt: skip
    (row,) = report["labels"]
    assert (row["kind"], row["matched"], row["precision"], row["recall"]) == ("objects", 1, 1.0, 1.0)
    assert row["mean_iou"] == pytest.approx(0.75, abs=0.03) and report["unchanged"] == 0.0


def test_model_disagrees_tab_holds_the_most_disagreeing_tasks_and_is_made_once(
    tmp_path: Path, label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = client_for(tmp_path, label_studio.url)
    label_studio.views.append({"id": 1, "project": 3, "data": {"title": "Label next: most uncertain first"}})
    made = client.post("/label-next?project=3&disagreements=1")
    assert made.status_code == 200, made.json
    # alice's t2 and bob's t5 agree 0, alice's t1 2/3; bob's t1 and t3 agree fully
    assert made.json == {"id": 2, "title": "Model disagrees: review these", "action": "created", "scores_from": "v1",
                         "tasks": [2, 5, 1]}  # fmt: skip
    assert label_studio.project_version == "v1"
    tab = label_studio.views[1]["data"]
    assert tab["ordering"] == ["-tasks:predictions_score"] and tab["filters"]["conjunction"] == "or"
    assert tab["filters"]["items"] == [
        {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": task} for task in (2, 5, 1)
    ]
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "t")
    assert main(["label-next", "--project", "3", "--disagreements"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "updated" and len(label_studio.views) == 2
    assert label_studio.views[0]["data"] == {"title": "Label next: most uncertain first"}  # the other tab untouched
    assert client.post("/label-next?project=3&disagreements=maybe").status_code == 400


def test_no_disagreement_makes_a_tab_that_shows_nothing() -> None:
    from backend.ranking.tabs import disagreements_tab

    (only,) = disagreements_tab([])["filters"]["items"]
    assert only == {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": 0}


def test_each_report_is_kept_per_model_version(tmp_path: Path, label_studio: Any) -> None:
    client = client_for(tmp_path, label_studio.url)
    first = client.get("/report?project=3").json
    (v1,) = first["history"]
    # v1: matched Car 3 + Person 2 + Red 1 of predicted 4 + 2 + 2 and annotated 3 + 3 + 1 (+ Blue 1, Green 1)
    assert {k: v1[k] for k in ("model_version", "reports", "annotations", "tasks", "agreement", "unchanged")} == {
        "model_version": "v1", "reports": 1, "annotations": 5, "tasks": 4, "agreement": first["agreement"],
        "unchanged": 0.4}  # fmt: skip
    assert (v1["precision"], v1["recall"], v1["choice_accuracy"]) == (0.75, pytest.approx(6 / 9, abs=1e-4),
                                                                       pytest.approx(1 / 3, abs=1e-4))  # fmt: skip
    label_studio.served = "v0"  # a new version: t2 (Blue) and t4 (Red) annotated as it said
    client.get("/report?project=3")
    client.get("/report?project=3&version=v1")
    label_studio.served = None  # mixed versions: not kept
    history = client.get("/report?project=3").json["history"]
    assert [(h["model_version"], h["reports"]) for h in history] == [("v1", 2), ("v0", 1)]
    assert (history[1]["agreement"], history[1]["precision"], history[1]["recall"]) == (1.0, 1.0, 1.0)
    assert history[1]["choice_accuracy"] == 1.0 and history[0]["first"] <= history[0]["last"]
    page = client.get("/report.html?project=3").text
    assert "<h2>Model versions reviewed</h2>" in page and "<td>v0</td>" in page
    # kept in the store: another server on the same MODEL_DIR sees it
    again = client_for(tmp_path, label_studio.url).get("/report?project=3&version=v0").json["history"]
    assert [(h["model_version"], h["reports"]) for h in again] == [("v1", 2), ("v0", 2)]


def test_curves_mark_the_threshold_the_project_is_served_with(tmp_path: Path, label_studio: Any) -> None:
    from backend.store import ProjectRecord, ProjectStore

    config = """<View><Image name="image" value="$image"/>
      <RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Person"/></RectangleLabels>
      <Choices name="colour" toName="image"><Choice value="Red"/><Choice value="Blue"/><Choice value="Green"/></Choices>
    </View>"""
    extra = {"detection": {"score_threshold": 0.2}}
    ProjectStore(tmp_path).save(ProjectRecord("3.1700000000", config, extra, None, None, "v1"))
    report = client_for(tmp_path, label_studio.url).get("/report?project=3").json
    curves = {c["label"]: c for c in report["threshold_curves"]}
    assert set(curves) == {"Car", "Person"}  # objects only: Choices have no curve
    assert {(c["project_threshold"], c["threshold_source"]) for c in curves.values()} == {(0.2, "configured")}
    # Car: 0.9 kept twice, 0.8 kept by bob and deleted by alice, of 3 annotated; at 0.85 only the two 0.9s remain
    car = curves["Car"]
    assert car["precision"][17] == 1.0 and car["recall"][17] == pytest.approx(2 / 3, abs=1e-4)
    assert car["f1"][0] == pytest.approx(2 * 3 / (4 + 3), abs=1e-4) and car["best"] == 0.8
    assert report["score_histogram"]["accepted"][7:] == [2, 1, 2] and report["score_histogram"]["corrected"][8] == 1


def test_annotation_events_refresh_the_review_once_they_pause(
    tmp_path: Path, label_studio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ReviewRefresher, "start", lambda self: None)  # the test runs the due reviews itself
    client = client_for(tmp_path, label_studio.url, fit_debounce=0.3)
    refresher = client.application.extensions["prelabel"].reviews
    for annotation_id in (7, 8):  # a burst: one review
        body = {"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": annotation_id}]}
        assert client.post("/webhook", json=body).status_code == 200
    assert refresher.run_due() == [] and label_studio.pages == []  # still within the quiet spell
    time.sleep(0.35)
    assert refresher.run_due() == [3] and label_studio.pages == [1, 2, 3]
    assert [(h["model_version"], h["reports"]) for h in client.get("/report?project=3").json["history"]] == [("v1", 2)]
    assert "prelabel_review_project{" in client.get("/metrics").text

    failing = client_for(tmp_path / "other", "http://127.0.0.1:9", fit_debounce=0)  # nothing listens there
    failing.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 7}]})
    assert failing.application.extensions["prelabel"].reviews.run_due() == [3]
    assert "review after new annotations failed" in failing.get("/").text


def test_events_of_other_kinds_or_without_label_studio_review_nothing(tmp_path: Path, label_studio: Any) -> None:
    client = client_for(tmp_path, label_studio.url, fit_debounce=0)
    client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert client.application.extensions["prelabel"].reviews.run_due() == []
    bare = create_app(ServerSettings(model_dir=tmp_path / "bare", preload_projects=0)).test_client()
    bare.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 7}]})
    assert bare.application.extensions["prelabel"].reviews.run_due() == []


def test_label_next_leaves_the_version_of_a_project_served_by_another_backend_alone(
    tmp_path: Path, label_studio: Any
) -> None:
    label_studio.served = "another-backends-version"
    made = client_for(tmp_path, label_studio.url).post("/label-next?project=3")
    assert made.status_code == 200 and made.json["scores_from"] is None
    assert label_studio.project_version == "prelabel"  # what annotators see is not changed
