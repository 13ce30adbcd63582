"""What a fit promises: a failure keeps the last good version, versions can be pinned, one worker fits, a crash
leaves no torn version, DINOv2 controls wait for examples, OWL learns queries, masks calibrate by mask IoU."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
from flask import Response

from backend.detection import finish_detections
from backend.learning.store import LearningStore
from backend.learning.versions import ControlState, LearnedState, read_state, write_state
from backend.media import decode_image
from backend.plan import build_plan
from tests import fakes  # noqa: F401  (registers the fake segmenter)
from tests.backend.learning.conftest import PROJECT, PROJECT_ID, annotation_event, choice, coloured, run_fits
from tests.backend.learning.test_learner import BLUE, BOXES, CHOICES, RED, GradedDetector, chosen, predict, setup
from tests.helpers import LocalServer

ROOT = Path(__file__).resolve().parents[3]


def annotate_colours(client: Any, start: int = 1, bad: str | None = None) -> None:
    for n, (rgb, label) in enumerate([(RED, "Red"), (RED, "Red"), (BLUE, "Blue"), (BLUE, "Blue")]):
        image = bad if bad and n == 0 else coloured(rgb, start + n)
        client.post("/webhook", json=annotation_event(start + n, start + n, image, [choice("colour", label)]))


def test_a_failed_fit_keeps_the_last_good_version_and_says_why(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service)
    good = setup(client, CHOICES, extra)
    assert good == f"{base}-fit1"

    annotate_colours(client, start=20, bad="http://127.0.0.1:9/gone.png")  # an image that cannot be fetched
    assert service.learner.run_due(debounce=0.0)  # a fit ran...
    assert len(service.learner.store.fits(PROJECT_ID)) == 1  # ...and made no version
    assert setup(client, CHOICES, extra) == good
    assert all(r["model_version"] == good for r in predict(client, [coloured(RED, 99)]))
    answer = client.post("/webhook", json=annotation_event(30, 30, coloured(RED, 30), [choice("colour", "Red")])).json
    assert answer["last_fit"]["outcome"] == "failed" and "gone.png" in answer["last_fit"]["detail"]
    assert f"still serving {good}" in answer["last_fit"]["detail"]
    assert 'prelabel_fits_total{outcome="failed"}' in client.get("/metrics").text
    assert "fit failed, still serving" in client.get("/").text


def test_a_project_can_pin_an_earlier_version_and_unknown_pins_are_refused(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service, 1)
    annotate_colours(client, start=10)
    run_fits(service, 2)
    assert setup(client, CHOICES, extra) == f"{base}-fit2"
    pinned = {**extra, "learning": {"version": "fit1"}}
    assert setup(client, CHOICES, pinned) == f"{base}-fit1"
    assert {r["model_version"] for r in predict(client, [coloured(BLUE, 77)])} == {f"{base}-fit1"}
    response = client.post("/setup", json={"project": PROJECT, "schema": CHOICES,
                                           "extra_params": {**extra, "learning": {"version": "fit9"}}})  # fmt: skip
    assert (
        response.status_code == 400
        and "'fit9' is not a fit of the current settings; fits: fit1, fit2" in (response.json["error"])
    )


def test_old_versions_are_pruned_but_a_pinned_one_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.learning import learner as learner_module
    from backend.learning.learner import Learner
    from backend.learning.settings import LearningSettings
    from backend.learning.store import FitRecord

    monkeypatch.setattr(learner_module, "KEPT_VERSIONS", 2)
    learner = Learner.__new__(Learner)
    learner.store = LearningStore(tmp_path)
    state = LearnedState({"c": ControlState("c", thresholds={"A": 0.5})}, {})
    for n in range(1, 6):
        path = write_state(tmp_path / "v", n, state)
        learner.store.add_fit(FitRecord(PROJECT_ID, n, PROJECT, "base", path, time.time(), {}))
    learner._prune(PROJECT_ID, LearningSettings(version="fit1"))
    assert [f.n for f in learner.store.fits(PROJECT_ID)] == [1, 4, 5]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["fit1.npz", "fit4.npz", "fit5.npz"]


def test_a_kill_during_a_version_write_leaves_the_last_version_and_no_torn_file(tmp_path: Path) -> None:
    state = LearnedState({"c": ControlState("c", thresholds={"A": 0.25})}, {"n": 1})
    first = write_state(tmp_path, 1, state)
    # A child writes fit2, but stops forever just before the rename; then it is killed -9.
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from backend.learning import versions\n"
        "def stuck(*args): print('ready', flush=True); time.sleep(60)\n"
        "versions.os.replace = stuck\n"
        "big = versions.ControlState('c', head={'weights': __import__('numpy').ones((50, 4096), 'float32'),\n"
        "    'bias': __import__('numpy').zeros(50, 'float32'), 'usable': __import__('numpy').ones(50, bool)},\n"
        "    calibration='softmax', embedder=('clip', 'x'))\n"
        "versions.write_state(Path(sys.argv[1]), 2, versions.LearnedState({'c': big}, {}))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert not (tmp_path / "fit2.npz").exists()
    assert [p.name for p in tmp_path.glob(".tmp-*")]  # the torn bytes stayed in a temporary file...
    assert read_state(first).controls["c"].thresholds == {"A": 0.25}  # ...and the last version reads as before
    write_state(tmp_path, 2, state)  # the next fit cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit1.npz", "fit2.npz"]


def test_a_fit_claimed_by_a_worker_that_died_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    store.request_fit(PROJECT_ID)
    first = store.claim_fit("dead-worker", debounce=0.0, lease=0.2)
    assert first is not None and store.claim_fit("other", debounce=0.0, lease=60) is None
    time.sleep(0.3)
    taken = store.claim_fit("other", debounce=0.0, lease=60)
    assert taken is not None and taken.project_id == PROJECT_ID


def test_events_during_a_fit_ask_for_another_one(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    store.request_fit(PROJECT_ID)
    running = store.claim_fit("w", debounce=0.0, lease=60)
    assert running is not None
    time.sleep(0.01)
    store.request_fit(PROJECT_ID)  # an annotation arrives while fitting
    store.finish_fit(running, "w")
    assert store.pending(PROJECT_ID) and store.claim_fit("w", debounce=0.0, lease=60) is not None


def _worker(model_dir: str, barrier: Any, results: Any) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from backend.service import PrelabelService
    from backend.settings import ServerSettings
    from tests.backend.learning import test_learner  # noqa: F401  (registers the graded detector)

    service = PrelabelService(ServerSettings(model_dir=Path(model_dir), preload_projects=0, fit_debounce=3600.0))
    barrier.wait()
    ran = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        ran += service.learner.run_due(debounce=0.0)
    results.put(ran)


def test_several_workers_make_exactly_one_fit(app_service: Any, tmp_path: Path) -> None:
    client, service = app_service()
    extra = {"detection": {"model": GradedDetector.name}, "learning": {"min_examples": 1}}
    setup(client, BOXES, extra)
    for n in range(3):
        client.post("/webhook", json=annotation_event(n + 1, n + 1, coloured(RED, n), [_cat(0)]))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_worker, args=(str(service.settings.model_dir), barrier, results))
               for _ in range(4)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(results.get(timeout=5) for _ in workers) == [0, 0, 0, 1]
    assert [f.n for f in service.learner.store.fits(PROJECT_ID)] == [1]


def _cat(slot: int) -> dict:
    from tests.backend.learning.test_learner import cat_at

    return cat_at(slot)


def test_a_dinov2_control_waits_for_examples_then_follows_them(app_service: Any, tiny: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    client, service = app_service()
    extra = {"classification": {"model": "dinov2", "model_id": str(tiny("dinov2"))}}
    base = setup(client, CHOICES, extra)
    (before,) = predict(client, [coloured(RED, 5)])
    assert before["result"] == [] and before["model_version"] == base  # no text tower: nothing to say yet
    assert "answers only once the project has annotated examples" in caplog.text
    annotate_colours(client)
    run_fits(service)
    results = predict(client, [coloured(RED, 40 + i) for i in range(3)] + [coloured(BLUE, 50 + i) for i in range(3)])
    assert [chosen(r) for r in results] == ["Red"] * 3 + ["Blue"] * 3
    assert results[0]["model_version"] == f"{base}-fit1"


def test_a_box_whose_best_query_is_a_negative_is_dropped() -> None:
    plan = build_plan(BOXES, {"detection": {"model": GradedDetector.name}}, {}, device="cpu", dtype="auto")
    target = plan.targets[0]
    target = dataclasses.replace(target, prompt_labels=(*target.prompt_labels, 0, -1))  # text, query Cat, negative
    found = sv.Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float32),
                          confidence=np.array([0.9, 0.8, 0.7]), class_id=np.array([0, 1, 2]))  # fmt: skip
    kept = finish_detections(found, target, (100, 100))
    assert kept.xyxy.tolist() == [[0, 0, 10, 10], [20, 20, 30, 30]]


def test_owl_learns_queries_from_annotated_boxes_and_negatives_from_deleted_ones(app_service: Any, tiny: Any) -> None:
    images = {i: coloured(RED, i, size=(64, 64)) for i in range(1, 4)}
    with LocalServer() as ls:
        predicted = [_cat(0), _cat(2)]  # the prediction task 3's annotator started from: they deleted slot 2

        events = {i: annotation_event(i, i, images[i], [_cat(1)]) for i in (1, 2)}
        events[3] = annotation_event(3, 3, images[3], [_cat(0)], parent_prediction=77)

        @ls.app.get("/api/predictions/<int:prediction>/")
        def prediction(prediction: int) -> Response:
            assert prediction == 77
            return Response(json.dumps({"id": 77, "result": predicted}), content_type="application/json")

        @ls.app.get("/api/annotations/<int:annotation>/")
        def annotation(annotation: int) -> Response:  # what Label Studio answers when prelabel reads them back
            return Response(json.dumps(events[annotation]["annotation"]), content_type="application/json")

        @ls.app.get("/api/tasks/<int:task>/")
        def task(task: int) -> Response:
            return Response(
                json.dumps({**events[task]["task"], "project": PROJECT_ID}), content_type="application/json"
            )

        from tests.backend.learning.test_learner import app_service_fresh

        client, service = app_service_fresh(ls.url)
        extra = {"detection": {"model": "owlv2", "model_id": str(tiny("owlv2"))}, "learning": {"queries_per_label": 2}}
        setup(client, BOXES, extra)
        for event in events.values():
            client.post("/webhook", json=event)
        run_fits(service)
        state = read_state(service.learner.store.fits(PROJECT_ID)[0].path).controls["boxes"]
        assert state.query_labels.tolist() == [0, 0, -1]  # the two newest Cat boxes, then the deleted one
        adapter = service.pool.get(_owl_spec(service), 10)
        pixels = decode_image(base64.b64decode(images[3].split(",")[1]), 10**8).pixels
        expected = adapter.embed_boxes(pixels, np.array([[0.05 * 64, 0.1 * 64, 0.2 * 64, 0.3 * 64]]))[0]
        np.testing.assert_allclose(state.queries[0], expected, rtol=1e-5, atol=1e-6)  # newest: task 3's box
        served = service.learner.serve(service.store.get(PROJECT), service.plan(BOXES, extra)).targets[0]
        assert len(served.queries) == 3 and served.prompt_labels[-3:] == (0, 0, -1)
        (entry,) = predict(client, [coloured(RED, 9, size=(64, 64))])
        assert entry["model_version"].endswith("-fit1")


def _owl_spec(service: Any) -> Any:
    record = service.store.get(PROJECT)
    return service.plan(record.label_config, record.extra_params).targets[0].spec


MASKS = """<View><Image name="image" value="$image"/>
<PolygonLabels name="mask" toName="image"><Label value="Cat"/></PolygonLabels></View>"""


def _polygon(slot: int) -> dict:
    x0, x1 = 5 + 25 * slot, 20 + 25 * slot
    return {"from_name": "mask", "to_name": "image", "type": "polygonlabels", "original_width": 100,
            "original_height": 100, "value": {"points": [[x0, 10], [x1, 10], [x1, 30], [x0, 30]],
                                               "polygonlabels": ["Cat"]}}  # fmt: skip


def test_segmentation_calibrates_its_detector_by_mask_iou(app_service: Any) -> None:
    client, service = app_service()
    extra = {"detection": {"model": GradedDetector.name, "score_threshold": 0.5},
             "segmentation": {"model": "fake_segmenter"}, "learning": {"min_examples": 2}}  # fmt: skip
    base = setup(client, MASKS, extra)
    for n in range(3):
        image = coloured(RED, n, size=(100, 100))
        client.post("/webhook", json=annotation_event(n + 1, n + 1, image, [_polygon(0), _polygon(2)]))
    run_fits(service)
    (fit,) = service.learner.store.fits(PROJECT_ID)
    assert read_state(fit.path).controls["mask"].thresholds == {"Cat": pytest.approx(0.3)}
    assert setup(client, MASKS, extra) == f"{base}-fit1"
    (entry,) = predict(client, [coloured(BLUE, 9, size=(100, 100))])
    assert sorted(round(r["score"], 3) for r in entry["result"]) == [0.4, 0.6, 0.9]


def test_new_settings_refit_from_the_annotations_already_known(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service, 1)
    changed = {"classification": {**extra["classification"], "templates": ["a {} picture"]}}
    new_base = setup(client, CHOICES, changed)  # new settings: a new base version, served zero-shot for now...
    assert "-fit" not in new_base and service.learner.store.pending(PROJECT_ID)  # ...and a fit is asked for
    run_fits(service, 2)
    assert setup(client, CHOICES, changed) == f"{new_base}-fit2"
    setup(client, CHOICES, changed)
    assert not service.learner.store.pending(PROJECT_ID)  # asked once per base version, not on every /setup


def test_webhook_annotations_are_read_back_from_label_studio_and_invented_ones_dropped(tiny: Any) -> None:
    images = {i: coloured(RED if i < 3 else BLUE, i) for i in range(1, 6)}
    real = {i: annotation_event(i, i, images[i], [choice("colour", "Red" if i < 3 else "Blue")]) for i in (1, 2, 3, 4)}
    with LocalServer() as ls:

        @ls.app.get("/api/annotations/<int:annotation>/")
        def annotation(annotation: int) -> Response:
            if annotation not in real:
                return Response('{"detail": "Not found."}', status=404, content_type="application/json")
            return Response(json.dumps(real[annotation]["annotation"]), content_type="application/json")

        @ls.app.get("/api/tasks/<int:task>/")
        def task(task: int) -> Response:
            project = PROJECT_ID if task != 4 else 99  # task 4 lives in another project
            return Response(json.dumps({**real[task]["task"], "project": project}), content_type="application/json")

        from tests.backend.learning.test_learner import app_service_fresh

        client, service = app_service_fresh(ls.url)
        setup(client, CHOICES, {"classification": {"model": "clip", "model_id": str(tiny("clip"))}})
        claimed = {**real[1], "annotation": {**real[1]["annotation"], "result": [choice("colour", "Blue")]}}
        for event in [claimed, real[2], real[3], real[4]]:  # the payload of 1 lies about its label
            client.post("/webhook", json=event)
        invented = annotation_event(50, 50, images[5], [choice("colour", "Red")])  # no such annotation
        client.post("/webhook", json={**invented, "action": "ANNOTATIONS_CREATED",
                                      "annotation": [invented["annotation"]], "task": [invented["task"]]})  # fmt: skip
        run_fits(service)
        kept = {a.id: a for a in service.learner.store.annotations(PROJECT_ID)}
        assert sorted(kept) == [1, 2, 3]  # 50 is unknown to Label Studio, 4 is another project's
        assert kept[1].result[0]["value"]["choices"] == ["Red"]  # what Label Studio says, not what the payload said
        (fit,) = service.learner.store.fits(PROJECT_ID)
        assert fit.summary["colour"]["per_label"] == {"Red": 2, "Blue": 1}


def test_a_damaged_fit_file_falls_back_to_the_one_before_and_says_so(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service, 1)
    annotate_colours(client, start=10)
    run_fits(service, 2)
    newest = service.learner.store.fits(PROJECT_ID)[-1].path
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    assert setup(client, CHOICES, extra) == f"{base}-fit1"
    assert {r["model_version"] for r in predict(client, [coloured(RED, 3)])} == {f"{base}-fit1"}
    assert "-fit2 cannot be read" in client.get("/").text
    pinned = client.post("/setup", json={"project": PROJECT, "schema": CHOICES,
                                         "extra_params": {**extra, "learning": {"version": "fit2"}}})  # fmt: skip
    assert pinned.status_code == 400 and "its file is damaged" in pinned.json["error"]


def test_a_lost_learning_store_never_reuses_a_version_name(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service, 1)
    (service.settings.model_dir / "learning.sqlite3").write_bytes(os.urandom(8192))  # corrupt: moved aside
    assert setup(client, CHOICES, extra) == f"{base}-fit1"  # rebuilt from the file, still served
    annotate_colours(client, start=30)
    run_fits(service, 2)
    assert setup(client, CHOICES, extra) == f"{base}-fit2"


def test_an_unexpected_error_in_a_fit_is_reported_like_any_failure(
    app_service: Any, tiny: Any, monkeypatch: Any
) -> None:
    client, service = app_service()
    setup(client, CHOICES, {"classification": {"model": "clip", "model_id": str(tiny("clip"))}})
    annotate_colours(client)
    monkeypatch.setattr("backend.learning.learner.fit_choice_head", lambda *a, **k: 1 / 0)
    assert service.learner.run_due(debounce=0.0)
    outcome = service.learner.store.outcome(PROJECT_ID)
    assert outcome["outcome"] == "failed" and "ZeroDivisionError" in outcome["detail"]
    assert "ZeroDivisionError" in client.get("/").text


def test_learning_switched_off_serves_the_zero_shot_model_again(app_service: Any, tiny: Any) -> None:
    client, service = app_service()
    extra = {"classification": {"model": "clip", "model_id": str(tiny("clip"))}}
    base = setup(client, CHOICES, extra)
    annotate_colours(client)
    run_fits(service)
    assert setup(client, CHOICES, extra) == f"{base}-fit1"
    assert setup(client, CHOICES, {**extra, "learning": {"enabled": False}}) == base


def test_a_fit_that_learns_nothing_says_why_per_control(app_service: Any) -> None:
    client, service = app_service()
    setup(client, BOXES, {"detection": {"model": GradedDetector.name}, "learning": {"min_examples": 2}})
    far = {
        "from_name": "boxes",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 80, "y": 80, "width": 10, "height": 10, "rectanglelabels": ["Cat"]},
    }
    for n in range(3):  # boxes where the detector never finds anything
        client.post("/webhook", json=annotation_event(n + 1, n + 1, coloured(RED, n), [far]))  # fmt: skip
    assert service.learner.run_due(debounce=0.0)
    outcome = service.learner.store.outcome(PROJECT_ID)
    assert outcome["outcome"] == "nothing_to_learn"
    assert outcome["detail"] == "boxes: Cat: the model found none of its 3 annotated objects above 0.05"
    answer = client.post("/webhook", json=annotation_event(9, 9, coloured(RED, 9), [far])).json
    assert answer["last_fit"]["outcome"] == "nothing_to_learn"
