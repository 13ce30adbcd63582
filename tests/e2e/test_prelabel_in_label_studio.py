"""prelabel inside a real Label Studio 1.23: connect, retrieve predictions, read them back."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from backend.cli import main
from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import RECT_CONFIG, image_array

pytestmark = pytest.mark.e2e

RECT = RECT_CONFIG


@pytest.fixture(scope="module")
def pat_server(label_studio: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrelabelServer]:
    """prelabel authenticating to Label Studio with a Personal Access Token from the environment."""
    env = {
        "LABEL_STUDIO_URL": label_studio.base_url,
        "LABEL_STUDIO_API_KEY": label_studio.create_personal_access_token(),
    }
    with PrelabelServer(tmp_path_factory.mktemp("prelabel-pat"), env) as server:
        yield server


def write_image(path: Path, width: int, height: int, seed: int, orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(image_array(width, height, seed)).save(path, "JPEG", exif=exif)
    return path


def displayed_size(path: Path) -> tuple[int, int]:
    from PIL import ImageOps

    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return ImageOps.exif_transpose(image).size


def test_retrieve_predictions_through_the_data_manager(
    label_studio: LabelStudio, pat_server: PrelabelServer, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    project = ls.create_project("prelabel grounding dino", RECT)
    uploads = [write_image(tmp_path / "a.jpg", 64, 48, 1), write_image(tmp_path / "rotated.jpg", 80, 40, 2, 6)]
    task_ids = ls.import_files(project["id"], uploads)
    local = write_image(ls.document_root / "e2e" / "local one.jpg", 50, 30, 3)
    ls.add_local_storage(project["id"], "e2e")
    task_ids += ls.import_tasks(project["id"], [{"data": {"image": ls.local_file_url(local)}}])
    sizes = dict(zip(task_ids, [displayed_size(p) for p in [*uploads, local]], strict=True))
    assert sizes[task_ids[1]] == (40, 80)  # EXIF orientation 6: displayed rotated

    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.5}}
    backend = ls.add_ml_backend(project["id"], pat_server.url, title="prelabel", extra_params=extra)
    version = requests.get(f"{pat_server.url}/versions", params={"project": project["id"]}, timeout=10).json()
    (model_version,) = version["versions"]
    assert backend["id"]

    ls.retrieve_predictions(project["id"])
    interface = LabelInterface(RECT)
    for task_id in task_ids:
        (prediction,) = ls.predictions(task_id)
        assert prediction["model_version"] == model_version
        assert prediction["result"], f"task {task_id} got no regions:\n{pat_server.log_tail()}"
        assert interface.validate_prediction(prediction)
        for region in prediction["result"]:
            assert (region["original_width"], region["original_height"]) == sizes[task_id]
            assert region["from_name"] == "label" and region["to_name"] == "image"
            assert region["value"]["rectanglelabels"][0] in ("Cat", "Remote")
            assert 0 <= region["value"]["x"] <= 100 and region["value"]["x"] + region["value"]["width"] <= 100 + 1e-6
        assert prediction["score"] == pytest.approx(
            sum(r["score"] for r in prediction["result"]) / len(prediction["result"])
        )

    ls.retrieve_predictions(project["id"])  # a second retrieve must not duplicate
    assert [len(ls.predictions(t)) for t in task_ids] == [1, 1, 1]
    metrics = requests.get(f"{pat_server.url}/metrics", timeout=10).text  # aggregated over both workers
    assert 'prelabel_requests_total{method="POST",route="/predict",status="200"}' in metrics
    assert 'prelabel_adapter_images_total{adapter="grounding_dino"} 3.0' in metrics


def test_preview_reads_the_project_from_label_studio_and_writes_nothing(
    label_studio: LabelStudio, pat_server: PrelabelServer, tiny: Callable[[str], Path], tmp_path: Path, capsys
) -> None:
    ls = label_studio
    project = ls.create_project("prelabel preview", RECT)
    task_ids = ls.import_files(project["id"], [write_image(tmp_path / f"p{i}.jpg", 64, 48, 10 + i) for i in range(3)])
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.5}}
    ls.add_ml_backend(project["id"], pat_server.url, title="prelabel", extra_params=extra)

    argv = ["preview", "--project", str(project["id"]), "--tasks", "2", "--server", pat_server.url, "--json"]
    assert main(argv) == 0, pat_server.log_tail()
    answer = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in answer["tasks"]] == task_ids[:2] and answer["failed"] == {}
    regions = [r for t in answer["tasks"] for r in t["result"]]
    assert regions and all(r["score"] >= 0.5 for r in regions), pat_server.log_tail()
    per_label = {label: d["count"] for label, d in answer["labels"]["label"].items()}
    counted = {label: sum(r["value"]["rectanglelabels"] == [label] for r in regions) for label in per_label}
    assert per_label == counted and sum(per_label.values()) == len(regions)
    assert all(ls.predictions(t) == [] for t in task_ids)  # nothing written to Label Studio


@pytest.fixture(scope="module")
def setup_token_server(label_studio: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrelabelServer]:
    """prelabel with no Label Studio settings: it uses the hostname and token from /setup, and reads local files."""
    env = {
        "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.document_root),
        "LABEL_STUDIO_URL": "",
        "LABEL_STUDIO_API_KEY": "",
    }
    with PrelabelServer(tmp_path_factory.mktemp("prelabel-legacy"), env) as server:
        yield server


@pytest.mark.parametrize("model", ["owlv2", "omdet_turbo", "detic"])
def test_each_project_picks_its_detector_through_extra_params(
    label_studio: LabelStudio,
    setup_token_server: PrelabelServer,
    tiny: Callable[[str], Path],
    tmp_path: Path,
    model: str,
) -> None:
    ls = label_studio
    project = ls.create_project(f"prelabel {model}", RECT)
    task_ids = ls.import_files(project["id"], [write_image(tmp_path / "u.jpg", 64, 48, 4)])
    local = write_image(ls.document_root / f"e2e-{model}" / "l.jpg", 48, 64, 5)
    ls.add_local_storage(project["id"], f"e2e-{model}")
    task_ids += ls.import_tasks(project["id"], [{"data": {"image": ls.local_file_url(local)}}])
    extra = json.dumps({"detection": {"model": model, "model_id": str(tiny(model)), "score_threshold": 0.0}})
    ls.add_ml_backend(
        project["id"], setup_token_server.url, title=model, extra_params=extra
    )  # as a string, like the UI
    ls.retrieve_predictions(project["id"])
    for task_id in task_ids:
        (prediction,) = ls.predictions(task_id)
        assert prediction["model_version"].startswith(f"{model}-")
        assert prediction["result"], f"task {task_id} got no regions:\n{setup_token_server.log_tail()}"
        assert LabelInterface(RECT).validate_prediction(prediction)


SEGMENT = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Remote"/></RectangleLabels>
  <BrushLabels name="paint" toName="image"><Label value="Cat"/><Label value="Remote"/></BrushLabels>
  <KeyPointLabels name="clicks" toName="image" smart="true"><Label value="Cat"/><Label value="Remote"/></KeyPointLabels>
</View>"""


def test_brush_masks_by_retrieve_and_a_mask_per_click_through_interactive_annotating(
    label_studio: LabelStudio, pat_server: PrelabelServer, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ls = label_studio
    project = ls.create_project("prelabel grounded sam", SEGMENT)
    task_ids = ls.import_files(project["id"], [write_image(tmp_path / f"s{i}.jpg", 64, 48, 10 + i) for i in range(2)])
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.5},
             "segmentation": {"model_id": str(tiny("sam"))}, "interactive": {"model_id": str(tiny("sam"))}}  # fmt: skip
    backend = ls.add_ml_backend(project["id"], pat_server.url, title="sam", extra_params=extra, is_interactive=True)
    ls.retrieve_predictions(project["id"])
    from label_studio_sdk.converter.brush import decode_rle

    for task_id in task_ids:
        (prediction,) = ls.predictions(task_id)
        assert LabelInterface(SEGMENT).validate_prediction(prediction)
        boxes = [r for r in prediction["result"] if r["from_name"] == "boxes"]
        paint = [r for r in prediction["result"] if r["from_name"] == "paint"]
        assert boxes and paint, pat_server.log_tail()
        # masks come from the same detector pass as the boxes: same labels and scores (tiny masks may drop out)
        assert {(r["value"]["brushlabels"][0], round(r["score"], 6)) for r in paint} <= {
            (r["value"]["rectanglelabels"][0], round(r["score"], 6)) for r in boxes
        }
        for region in paint:
            mask = np.reshape(decode_rle(region["value"]["rle"]), (48, 64, 4))[:, :, 3]
            assert set(np.unique(mask)) <= {0, 255} and mask.any()

    click = {"type": "keypointlabels", "from_name": "clicks", "to_name": "image", "original_width": 64,
             "original_height": 48, "is_positive": True, "value": {"x": 40.0, "y": 50.0, "width": 0.6,
                                                                  "keypointlabels": ["Remote"]}}  # fmt: skip
    answer = ls.interactive_annotating(backend["id"], task_ids[0], {"result": [click]})["data"]
    (region,) = answer["result"]
    assert region["from_name"] == "paint" and region["value"]["brushlabels"] == ["Remote"]
    assert np.reshape(decode_rle(region["value"]["rle"]), (48, 64, 4))[:, :, 3].any()
    assert len(ls.predictions(task_ids[0])) == 1  # interactive answers are not stored


BOXES_AND_CHOICES = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="boxes" toName="image"><Label value="Cat"/><Label value="Remote"/></RectangleLabels>
  <Choices name="scene" toName="image"><Choice value="Cat" predicted_values="a cat"/><Choice value="Dog"/></Choices>
</View>"""


@pytest.mark.parametrize("classifier", ["clip", "albef"])
def test_choices_and_boxes_on_one_image(
    label_studio: LabelStudio, pat_server: PrelabelServer, tiny: Callable[[str], Path], tmp_path: Path, classifier: str
) -> None:
    ls = label_studio
    project = ls.create_project(f"prelabel {classifier} choices", BOXES_AND_CHOICES)
    task_ids = ls.import_files(project["id"], [write_image(tmp_path / f"c{i}.jpg", 64, 48, 20 + i) for i in range(2)])
    extra = {"detection": {"model_id": str(tiny("grounding_dino")), "score_threshold": 0.5},
             "classification": {"model": classifier, "model_id": str(tiny(classifier))}}  # fmt: skip
    ls.add_ml_backend(project["id"], pat_server.url, title=classifier, extra_params=extra)
    ls.retrieve_predictions(project["id"])
    for task_id in task_ids:
        (prediction,) = ls.predictions(task_id)
        assert LabelInterface(BOXES_AND_CHOICES).validate_prediction(prediction)
        (choice,) = [r for r in prediction["result"] if r["from_name"] == "scene"]
        assert choice["value"]["choices"][0] in ("Cat", "Dog") and 0.5 <= choice["score"] <= 1.0
        assert any(r["from_name"] == "boxes" for r in prediction["result"]), pat_server.log_tail()
        assert classifier in prediction["model_version"]
