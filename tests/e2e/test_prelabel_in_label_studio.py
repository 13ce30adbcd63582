"""prelabel inside a real Label Studio 1.23: connect, retrieve predictions, read them back."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from tests.e2e.label_studio import LabelStudio
from tests.e2e.prelabel_server import PrelabelServer
from tests.helpers import image_array

pytestmark = pytest.mark.e2e

RECT = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Cat" predicted_values="a cat,cat"/>
    <Label value="Remote"/>
  </RectangleLabels>
</View>"""


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


@pytest.mark.parametrize("model", ["owlv2", "omdet_turbo"])
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
