"""Learning through the app: webhooks -> a fit -> a new version -> different predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import supervision as sv
from flask import Response, request

from backend.learning.versions import read_state
from model_adapters.base import Adapter, Query, Task
from model_adapters.registry import register_adapter
from tests.backend.learning.conftest import (
    PROJECT,
    PROJECT_ID,
    annotation_event,
    choice,
    coloured,
    rectangle,
    run_fits,
)
from tests.helpers import LocalServer

RED, BLUE = (200, 30, 30), (30, 30, 200)
CHOICES = """<View><Image name="image" value="$image"/>
<Choices name="colour" toName="image"><Choice value="Red"/><Choice value="Blue"/></Choices></View>"""
BOXES = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="Cat"/></RectangleLabels></View>"""


def setup(client: Any, config: str, extra: dict) -> str:
    response = client.post("/setup", json={"project": PROJECT, "schema": config, "extra_params": extra})
    assert response.status_code == 200, response.json
    return response.json["model_version"]


def predict(client: Any, images: list[str]) -> list[dict]:
    tasks = [{"id": 100 + i, "data": {"image": image}} for i, image in enumerate(images)]
    response = client.post("/predict", json={"tasks": tasks, "project": PROJECT})
    assert response.status_code == 200, response.json
    return response.json["results"]


def chosen(entry: dict) -> str:
    (region,) = entry["result"]
    return region["value"]["choices"][0]


def test_annotated_choices_make_a_new_version_that_follows_them(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    train = [(RED, "Red", i) for i in range(3)] + [(BLUE, "Blue", 10 + i) for i in range(3)]
    for n, (rgb, label, seed) in enumerate(train):
        answer = client.post(
            "/webhook", json=annotation_event(n + 1, n + 1, coloured(rgb, seed), [choice("colour", label)])
        )
        assert answer.json["status"] == "scheduled"
    run_fits(service)
    version = setup(client, CHOICES, extra)
    assert version == f"{base}-fit1"
    held_out = [coloured(RED, 50 + i) for i in range(4)] + [coloured(BLUE, 60 + i) for i in range(4)]
    results = predict(client, held_out)
    assert [chosen(r) for r in results] == ["Red"] * 4 + ["Blue"] * 4
    assert {r["model_version"] for r in results} == {version}
    assert client.get(f"/versions?project={PROJECT_ID}").json["versions"] == [base, version]
    page = client.get("/").text
    assert f"<code>{version}</code>" in page and "1 fit(s)" in page and "last: fitted" in page


@dataclass(frozen=True)
class _Params:
    score_threshold: float = 0.5


@register_adapter
class GradedDetector(Adapter[_Params]):
    """Four 'Cat' candidates per image, at fixed places, scored 0.9, 0.6, 0.4, 0.2 (kept above the threshold)."""

    name = "test_graded_detector"
    task = Task.DETECTION
    variants = {"default": "test/graded"}
    default_variant = "default"
    Params = _Params
    SCORES = (0.9, 0.6, 0.4, 0.2)

    def load(self) -> None:
        """Nothing to load."""

    def preprocess(self, images: Sequence[np.ndarray], query: Query) -> dict[str, Any]:
        return {}

    def _forward(self, batch: Any) -> Any:
        return None

    def __call__(self, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        return self.postprocess(None, images, query)

    def postprocess(self, raw: Any, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            boxes = np.array([[0.05 + 0.25 * i, 0.1, 0.2 + 0.25 * i, 0.3] for i in range(4)]) * [w, h, w, h]
            scores = np.array(self.SCORES)
            keep = scores > query.params.score_threshold
            out.append(sv.Detections(boxes[keep].astype(np.float32), confidence=scores[keep],
                                     class_id=np.zeros(int(keep.sum()), dtype=int)))  # fmt: skip
        return out


def cat_at(slot: int) -> dict:
    return rectangle("boxes", "Cat", 5 + 25 * slot, 10, 15, 20)


def test_annotated_boxes_calibrate_each_labels_threshold_to_the_f1_best(app_service: Any) -> None:
    client, service = app_service()
    extra = {"detection": {"model": GradedDetector.name, "score_threshold": 0.5}, "learning": {"min_examples": 2}}
    base = setup(client, BOXES, extra)
    assert len(predict(client, [coloured(RED, 1)])[0]["result"]) == 2  # zero-shot: 0.9 and 0.6 pass 0.5
    # Annotators keep the boxes scored 0.9 and 0.4 and delete the others, on three images. Keeping the three best
    # gives F1 = 2*6/(9+6) = 0.8 against 0.67 for one or four; the threshold goes between 0.4 and 0.2.
    for n in range(3):
        event = annotation_event(n + 1, n + 1, coloured(RED, n), [cat_at(0), cat_at(2)])
        client.post("/webhook", json=event)
    run_fits(service)
    (fit,) = service.learner.store.fits(PROJECT_ID)
    assert read_state(fit.path).controls["boxes"].thresholds == {"Cat": pytest.approx(0.3)}
    assert setup(client, BOXES, extra) == f"{base}-fit1"
    (entry,) = predict(client, [coloured(BLUE, 9)])
    assert sorted(r["score"] for r in entry["result"]) == pytest.approx([0.4, 0.6, 0.9])


def test_events_in_any_order_learn_what_start_training_learns_from_scratch(
    app_service: Any, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created, updated and deleted annotations, one event at a time, equal a full sync of what remains."""
    images = {i: coloured(RED if i % 2 else BLUE, i) for i in range(1, 6)}
    labels = {i: "Red" if i % 2 else "Blue" for i in images}
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}

    client, service = app_service()
    setup(client, CHOICES, extra)
    for i in images:  # annotation i on task i; task 3 first gets the wrong label, then is corrected
        label = "Blue" if i == 3 else labels[i]
        client.post("/webhook", json=annotation_event(i, i, images[i], [choice("colour", label)]))
    client.post("/webhook", json=annotation_event(3, 3, images[3], [choice("colour", "Red")], "ANNOTATION_UPDATED"))
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": PROJECT_ID},
                                  "annotations": [{"id": 5}]})  # fmt: skip
    run_fits(service)
    incremental = read_state(service.learner.store.fits(PROJECT_ID)[0].path).controls["colour"]

    with LocalServer() as ls:  # what Label Studio's API answers for Start training: annotations 1..4 as they are now

        @ls.app.get("/api/tasks")
        def tasks() -> Response:
            assert (
                json.loads(request.args["query"])["filters"]["items"][0]["filter"] == "filter:tasks:total_annotations"
            )
            page = int(request.args["page"])
            chosen = [i for i in (1, 2, 3, 4)][(page - 1) * 2 : page * 2]
            items = [{"id": i, "data": {"image": images[i]},
                      "annotations": [annotation_event(i, i, images[i], [choice("colour", labels[i])])["annotation"]]}
                     for i in chosen]  # fmt: skip
            return Response(json.dumps({"tasks": items, "total": 4}), content_type="application/json")

        fresh_client, fresh = app_service_fresh(ls.url)
        setup(fresh_client, CHOICES, extra)
        start = {"action": "START_TRAINING", "project": {"id": PROJECT_ID}}  # what the button posts
        assert fresh_client.post("/webhook", json=start).json["status"] == "scheduled"
        monkeypatch.setattr("backend.learning.sync.PAGE_SIZE", 2)  # page through the fake API two tasks at a time
        run_fits(fresh)
        scratch = read_state(fresh.learner.store.fits(PROJECT_ID)[0].path).controls["colour"]
    for key in ("weights", "bias", "usable"):
        np.testing.assert_allclose(incremental.head[key], scratch.head[key], rtol=1e-5, atol=1e-5)


def app_service_fresh(ls_url: str) -> Any:
    """A second app on a new MODEL_DIR that reaches a (fake) Label Studio."""
    import tempfile
    from pathlib import Path

    from backend.app import create_app
    from backend.settings import ServerSettings

    settings = ServerSettings(model_dir=Path(tempfile.mkdtemp()), preload_projects=0, fit_debounce=3600.0,
                              label_studio_url=ls_url, media_allowed_hosts=frozenset({"127.0.0.1"}))  # fmt: skip
    app = create_app(settings)
    return app.test_client(), app.extensions["prelabel"]
