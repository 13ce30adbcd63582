from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
from flask.testing import FlaskClient
from label_studio_sdk.label_interface import LabelInterface

from backend.app import create_app
from backend.settings import ServerSettings
from model_adapters.base import Query
from tests.fakes import SLOW_LOAD_S, SlowFakeDetector
from tests.helpers import RECT_CONFIG, data_uri, image_array, make_task
from tests.references import owl_text_and_example_logits


def make_client(tmp_path: Path, **settings: Any) -> FlaskClient:
    return create_app(ServerSettings(model_dir=tmp_path, preload_projects=0, **settings)).test_client()


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return make_client(tmp_path)


def setup_body(extra_params: Any = None, project: str = "3.1700000000", schema: str = RECT_CONFIG) -> dict:
    return {"project": project, "schema": schema, "hostname": "http://localhost:8080", "access_token": "t" * 40,
            "extra_params": extra_params}  # fmt: skip


def predict_body(tasks: list[dict], project: str = "3.1700000000", context: Any = None) -> dict:
    return {"tasks": tasks, "project": project, "label_config": RECT_CONFIG,
            "params": {"login": None, "password": None, "context": context}}  # fmt: skip


def test_health_is_json_and_the_root_is_a_status_page(client: FlaskClient) -> None:
    body = client.get("/health").json
    assert body["status"] == "UP" and body["model_class"] == "prelabel"
    page = client.get("/")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "prelabel status" in page.text and "No project has connected yet" in page.text


@pytest.mark.parametrize(
    "extra_params",
    [None, "", json.dumps({"detection": {"model": "slow_fake"}}), {"detection": {"model": "slow_fake"}}],
)
def test_setup_accepts_every_extra_params_form(client: FlaskClient, extra_params: Any) -> None:
    response = client.post("/setup", json=setup_body(extra_params))
    assert response.status_code == 200
    assert response.json["model_version"].startswith(("grounding_dino-", "slow_fake-"))


def test_setup_answers_before_the_model_loads_and_predict_waits_for_it(client: FlaskClient) -> None:
    started = time.perf_counter()
    setup = client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/slow-setup"}}))
    assert time.perf_counter() - started < SLOW_LOAD_S / 3
    assert client.get("/health").json["models"][0]["state"] in ("queued", "loading")
    tasks = [make_task(1, data_uri())]
    result = client.post("/predict", json=predict_body(tasks))
    assert result.status_code == 200 and SlowFakeDetector.loads["fake/slow-setup"] == 1
    assert result.json["results"][0]["model_version"] == setup.json["model_version"]
    assert client.get("/health").json["models"][0]["state"] == "ready"


def test_predict_one_entry_per_task_in_order_failed_tasks_get_no_prediction(client: FlaskClient) -> None:
    version = client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}})).json["model_version"]
    tasks = [make_task(10, data_uri(64, 48)), make_task(11, "not-an-image-url"), make_task(12, data_uri(30, 20)),
             {"id": 13, "data": {"other": "x"}}]  # fmt: skip
    results = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert len(results) == 4
    # A failed task is answered with zero predictions ([]): Label Studio stores nothing and resends it next time.
    assert results[1] == [] and results[3] == []
    # prompts "a cat" and "cat" give one box each on the same spot: NMS keeps one Cat, plus one Remote
    assert [len(results[i]["result"]) for i in (0, 2)] == [2, 2]
    assert [results[i]["model_version"] for i in (0, 2)] == [version] * 2
    assert results[2]["result"][0]["original_width"] == 30
    interface = LabelInterface(RECT_CONFIG)
    for i in (0, 2):
        assert interface.validate_prediction(results[i])
    page = client.get("/").text  # the reasons reach the status page, since Label Studio shows none
    assert "task 11: image &#x27;image&#x27;: unsupported image reference" in page
    assert "task 13: task data has no &#x27;image&#x27;" in page


def test_predict_without_setup_uses_the_request_config(client: FlaskClient) -> None:
    body = predict_body([make_task(1, data_uri())], project="99.1")
    response = client.post("/predict", json=body)
    assert response.status_code in (200, 503)  # default model may not be loadable offline: never a 500
    if response.status_code == 503:
        assert "IDEA-Research/grounding-dino-tiny" in response.json["error"]


def test_model_that_cannot_load_gives_503_naming_it(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/broken"}}))
    response = client.post("/predict", json=predict_body([make_task(1, data_uri())]))
    assert response.status_code == 503
    assert "fake/broken" in response.json["error"] and "no such model" in response.json["error"]


@pytest.mark.parametrize(
    ("path", "body", "match"),
    [
        ("/predict", "not json", "must be JSON"),
        ("/predict", {"tasks": "x"}, "list of tasks"),
        ("/predict", {"tasks": [{"id": 1}], "label_config": RECT_CONFIG}, "tasks\\[0\\]"),
        ("/predict", {"tasks": [], "project": "nope"}, "label_config"),
        ("/predict", {"tasks": [], "label_config": "<View"}, "cannot be parsed"),
        ("/predict", {"tasks": [], "params": [1]}, "'params' must be an object"),
        ("/setup", {"project": "1.1"}, "schema"),
        ("/setup", setup_body({"detection": {"score": 1}}), "unknown setting 'score'"),
        ("/setup", setup_body("{broken"), "JSON object"),
        ("/setup", {**setup_body(), "hostname": 5}, "'hostname' must be a string"),
        ("/webhook", {"project": {"id": 1}}, "action"),
    ],
)
def test_malformed_requests_get_400_with_a_json_error(client: FlaskClient, path: str, body: Any, match: str) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    response = client.post(path, **kwargs)
    assert response.status_code == 400
    assert pytest.importorskip("re").search(match, response.json["error"])


def test_unknown_routes_and_methods_are_json(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json
    assert client.get("/predict").status_code == 405


@pytest.mark.parametrize(
    ("action", "extra", "status"),
    [
        ("START_TRAINING", {}, "scheduled"),
        ("ANNOTATION_CREATED", {"annotation": {"id": 1, "task": 5, "result": []}, "task": {"id": 5, "data": {}}},
         "scheduled"),
        ("ANNOTATIONS_DELETED", {"annotations": [{"id": 1}]}, "scheduled"),
        ("PROJECT_UPDATED", {}, "ignored"),
    ],
)  # fmt: skip
def test_webhook_answers_every_action_with_what_learning_does(
    client: FlaskClient, action: str, extra: dict, status: str
) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}}))  # project 3
    response = client.post("/webhook", json={"action": action, "project": {"id": 3}, **extra})
    assert response.status_code == 200
    assert response.json["status"] == status and response.json["action"] == action


def test_versions_lists_what_setup_produced(client: FlaskClient) -> None:
    first = client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}})).json["model_version"]
    second = client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "score_threshold": 0.5}}))
    assert client.get("/versions?project=3").json["versions"] == [first, second.json["model_version"]]
    assert client.get("/versions?project=4").json["versions"] == []


def test_metrics_report_requests_latency_adapters_and_model_loads(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/metrics"}}))
    client.post("/predict", json=predict_body([make_task(1, data_uri()), make_task(2, "bad")]))
    text = client.get("/metrics").data.decode()
    assert 'prelabel_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'prelabel_request_seconds_bucket{le="0.005",route="/predict"}' in text
    assert 'prelabel_adapter_batch_seconds_count{adapter="slow_fake"}' in text
    assert 'prelabel_model_load_seconds_count{adapter="slow_fake",model_id="fake/metrics"} 1.0' in text
    assert 'prelabel_errors_total{kind="media"}' in text


def test_settings_from_setup_reach_predict_in_another_worker(tmp_path: Path) -> None:
    """Two apps on one MODEL_DIR stand for two gunicorn workers: /setup on one, /predict on the other."""
    worker_a, worker_b = make_client(tmp_path), make_client(tmp_path)
    extra = {"detection": {"model": "slow_fake", "nms_threshold": 1.0}, "prompts": {"Cat": ["kitten", "kitty", "cat"]}}
    version = worker_a.post("/setup", json=setup_body(extra)).json["model_version"]
    results = worker_b.post("/predict", json=predict_body([make_task(1, data_uri())])).json["results"]
    assert results[0]["model_version"] == version
    assert len(results[0]["result"]) == 4  # the stored prompts and NMS setting were used


def test_basic_auth_protects_every_route_but_health(tmp_path: Path) -> None:
    client = make_client(tmp_path, basic_auth_user="ls", basic_auth_pass="secret")
    assert client.get("/health").status_code == 200
    for method, path in [("post", "/setup"), ("post", "/predict"), ("post", "/webhook"), ("get", "/versions"),
                         ("get", "/metrics")]:  # fmt: skip
        assert getattr(client, method)(path, json={}).status_code == 401
    ok = client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}}), auth=("ls", "secret"))
    assert ok.status_code == 200
    assert client.post("/setup", json=setup_body(), auth=("ls", "wrong")).status_code == 401


def test_webhook_secret_in_the_query_replaces_basic_auth(tmp_path: Path) -> None:
    client = make_client(tmp_path, basic_auth_user="ls", basic_auth_pass="secret", webhook_secret="s3")
    body = {"action": "PROJECT_UPDATED", "project": {"id": 1}}
    assert client.post("/webhook?secret=s3", json=body).status_code == 200
    assert client.post("/webhook?secret=no", json=body).status_code == 401
    assert client.post("/webhook", json=body, auth=("ls", "secret")).status_code == 200
    only_secret = make_client(tmp_path / "b", webhook_secret="s3")
    assert only_secret.post("/webhook", json=body).status_code == 401
    assert only_secret.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}})).status_code == 200


def test_concurrent_predicts_share_one_model_load(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/slow-concurrent"}}))
    codes: list[int] = []

    def call() -> None:
        codes.append(client.post("/predict", json=predict_body([make_task(1, data_uri())])).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 4 and SlowFakeDetector.loads["fake/slow-concurrent"] == 1


TWO_IMAGES = """<View>
  <Image name="front" value="$front"/>
  <Image name="back" value="$back"/>
  <RectangleLabels name="front_boxes" toName="front"><Label value="Car"/></RectangleLabels>
  <RectangleLabels name="back_boxes" toName="back"><Label value="Person"/><Label value="Dog"/></RectangleLabels>
</View>"""


def test_several_controls_and_images_in_one_config_are_all_predicted(client: FlaskClient) -> None:
    body = setup_body({"detection": {"model": "slow_fake"}}, schema=TWO_IMAGES)
    version = client.post("/setup", json=body).json["model_version"]
    task = {"id": 5, "data": {"front": data_uri(64, 48), "back": data_uri(32, 40, seed=3)}}
    request_body = {**predict_body([task]), "label_config": TWO_IMAGES}
    (entry,) = client.post("/predict", json=request_body).json["results"]
    assert entry["model_version"] == version
    by_control = {}
    for region in entry["result"]:
        by_control.setdefault(region["from_name"], []).append(region)
    assert {r["to_name"] for r in by_control["front_boxes"]} == {"front"}
    assert {r["to_name"] for r in by_control["back_boxes"]} == {"back"}
    assert {(r["original_width"], r["original_height"]) for r in by_control["back_boxes"]} == {(32, 40)}
    assert sorted(r["value"]["rectanglelabels"][0] for r in by_control["back_boxes"]) == ["Dog", "Person"]
    assert LabelInterface(TWO_IMAGES).validate_prediction(entry)


def test_tasks_are_batched_up_to_the_adapters_batch_size(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}}))
    sizes: list[int] = []
    original = SlowFakeDetector.__call__

    def spy(self: SlowFakeDetector, images: Sequence[np.ndarray], query: Query) -> list[sv.Detections]:
        sizes.append(len(images))
        return original(self, images, query)

    monkeypatch.setattr(SlowFakeDetector, "__call__", spy)
    tasks = [make_task(i, data_uri(seed=i)) for i in range(10)]
    results = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert len(results) == 10 and all(r["result"] for r in results)
    assert sizes == [4, 4, 2]  # max_batch_size 4


def test_tasks_batch_only_with_images_that_answer_as_they_would_alone(
    client: FlaskClient, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grounding DINO pads a batch to its largest image, which changes the others' boxes: batch by resized size."""
    from model_adapters.grounding_dino import GroundingDino

    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.0, "nms_threshold": 1.0}}
    client.post("/setup", json=setup_body(extra))
    sizes = [(64, 48), (40, 30), (30, 40), (128, 96), (48, 64), (50, 50)]  # (w, h); resized: A A B A B C
    tasks = [make_task(i, data_uri(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    alone = [client.post("/predict", json=predict_body([task])).json["results"][0] for task in tasks]
    batches: list[int] = []
    monkeypatch.setattr("backend.runner.FIRST_CHUNK_TASKS", 16)  # one chunk: batching within it is what is tested
    original = GroundingDino.__call__
    monkeypatch.setattr(
        GroundingDino, "__call__", lambda self, images, q: (batches.append(len(images)), original(self, images, q))[1]
    )
    together = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert batches == [3, 2, 1]
    for one, many in zip(alone, together, strict=True):
        assert len(one["result"]) == len(many["result"]) > 0
        for a, b in zip(one["result"], many["result"], strict=True):
            assert a["value"]["rectanglelabels"] == b["value"]["rectanglelabels"]
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
            assert [a["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
                [b["value"][k] for k in ("x", "y", "width", "height")], abs=1e-3
            )


@pytest.fixture(scope="module")
def owlv2_dir(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny OWLv2 with its box head scaled down 100x, so its boxes are the patch grid.

    Random weights saturate the box sigmoids into boxes of (almost) zero width, which the encoder drops.
    """
    import torch
    from transformers import AutoProcessor, Owlv2ForObjectDetection

    model = Owlv2ForObjectDetection.from_pretrained(tiny("owlv2"))
    with torch.no_grad():
        for parameter in model.box_head.parameters():
            parameter.mul_(0.01)
    path = tmp_path_factory.mktemp("owlv2_grid")
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny("owlv2")).save_pretrained(path)
    return path


def test_few_shot_examples_label_the_boxes_they_match_best(client: FlaskClient, owlv2_dir: Path) -> None:
    """Each box gets the label of its best query: Cat's texts, Remote's text, or Remote's example box.

    The expected answer is OWLv2's text queries and HF's image-guided query for the example (the whole image).
    """
    import torch
    from transformers import Owlv2ForObjectDetection

    example = {"image": data_uri(48, 48, seed=7), "x": 0, "y": 0, "width": 100, "height": 100}
    extra = {"detection": {"model": "owlv2", "model_id": str(owlv2_dir), "score_threshold": 0.0,
                           "nms_threshold": 1.0}, "examples": {"Remote": [example]}}  # fmt: skip
    client.post("/setup", json=setup_body(extra))
    (entry,) = client.post("/predict", json=predict_body([make_task(1, data_uri(64, 48))])).json["results"]
    assert LabelInterface(RECT_CONFIG).validate_prediction(entry)

    model = Owlv2ForObjectDetection.from_pretrained(owlv2_dir).eval()
    texts = ("a cat", "cat", "Remote")  # Cat's predicted_values, then Remote's label
    logits, boxes = owl_text_and_example_logits(
        model, str(owlv2_dir), image_array(64, 48), texts, image_array(48, 48, 7)
    )
    best, scores = logits.argmax(-1), torch.from_numpy(logits.max(-1)).sigmoid().numpy()
    boxes = np.clip(boxes * 64, 0, [64, 48, 64, 48]) / [64, 48, 64, 48] * 100  # of the padded square -> percent
    kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (scores > 0)
    assert (best[kept] == 3).sum() >= 2 and (best[kept] < 3).sum() >= 2  # the example wins boxes, texts others
    labels = np.array(["Cat", "Cat", "Remote", "Remote"])[best]
    expected = sorted(zip(labels[kept], scores[kept], *boxes[kept].T, strict=True))
    got = sorted(
        (r["value"]["rectanglelabels"][0], r["score"], r["value"]["x"], r["value"]["y"],
         r["value"]["x"] + r["value"]["width"], r["value"]["y"] + r["value"]["height"]) for r in entry["result"]
    )  # fmt: skip
    assert len(got) == len(expected)
    for (label, score, *box), (want_label, want_score, *want_box) in zip(got, expected, strict=True):
        assert label == want_label and score == pytest.approx(want_score, abs=1e-5)
        assert box == pytest.approx(want_box, abs=1e-3)


def test_an_unreachable_example_image_fails_the_tasks_with_a_reason(client: FlaskClient, tiny: Any) -> None:
    example = {"image": "ftp://nowhere/x.png", "x": 10, "y": 10, "width": 50, "height": 50}
    extra = {"detection": {"model": "owlv2", "model_id": str(tiny("owlv2"))}, "examples": {"Cat": [example]}}
    client.post("/setup", json=setup_body(extra))
    (entry,) = client.post("/predict", json=predict_body([make_task(1, data_uri())])).json["results"]
    assert entry == []
    assert "example image of control &#x27;label&#x27;: unsupported image reference" in client.get("/").text


def test_models_no_project_uses_any_more_are_unloaded(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/first"}}))
    client.post("/predict", json=predict_body([make_task(1, data_uri())]))
    assert [m["model_id"] for m in client.get("/health").json["models"]] == ["fake/first"]
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "model_id": "fake/second"}}))
    client.post("/predict", json=predict_body([make_task(1, data_uri())]))
    assert [m["model_id"] for m in client.get("/health").json["models"]] == ["fake/second"]


def test_the_env_api_key_is_only_ever_sent_to_the_env_url() -> None:
    from backend.settings import SettingsError

    with pytest.raises(SettingsError, match="LABEL_STUDIO_API_KEY needs LABEL_STUDIO_URL"):
        ServerSettings.from_env({"LABEL_STUDIO_API_KEY": "k" * 40})


def test_versions_without_a_project_is_a_404_so_label_studio_lists_its_own(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake"}}))
    client.post("/setup", json=setup_body({"detection": {"model": "slow_fake", "score_threshold": 0.2}}, "4.2"))
    assert client.get("/versions").status_code == 404  # Label Studio 1.23 names no project
    assert len(client.get("/versions?project=4").json["versions"]) == 1


def test_a_refused_setup_and_refused_credentials_show_on_the_status_page(client: FlaskClient) -> None:
    client.post("/setup", json=setup_body({"detection": {"score": 1}}))
    page = client.get("/").text
    assert "/setup refused" in page and "unknown setting &#x27;score&#x27;" in page
    service = client.application.extensions["prelabel"]
    service.store.record_event("auth", "refused", project="3.1", count=2)
    assert "refused prelabel's credentials 2 times in the last hour" in client.get("/").text


def test_urgent_loads_go_ahead_of_background_preloads() -> None:
    from backend.models import ModelPool
    from model_adapters.base import ModelSpec

    pool = ModelPool(load_workers=1)
    order = SlowFakeDetector.loads
    for name in ("fake/slow-a", "fake/slow-b", "fake/slow-c"):
        pool.preload(ModelSpec("slow_fake", name))
    time.sleep(0.2)  # a is loading now
    pool.get(ModelSpec("slow_fake", "fake/urgent"), timeout=10)
    loaded = [k for k in order if k in ("fake/slow-a", "fake/slow-b", "fake/slow-c", "fake/urgent")]
    assert loaded == ["fake/slow-a", "fake/urgent"]
