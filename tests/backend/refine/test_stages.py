"""The refine stages through /predict, on models that really read pixels (``colour_models``); answers by hand."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from backend.app import create_app
from backend.settings import ServerSettings
from tests.backend.refine.colour_models import COLOURS, GRAY, ColourClassifier, ColourDetector
from tests.helpers import make_task

CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Person"/></RectangleLabels>
</View>"""
PROMPTS = {"Car": ["red"], "Person": ["green"]}


def canvas(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 255, dtype=np.uint8)


def paint(image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour


def uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def predict(tmp_path: Path, image: np.ndarray, settings: dict[str, Any]) -> list[tuple[str, list[float], float]]:
    """(label, [x0, y0, x1, y1] in pixels, score) per region, sorted."""
    client: FlaskClient = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    extra = {"prompts": PROMPTS, **settings}
    extra["detection"] = {"model": ColourDetector.name, **settings.get("detection", {})}
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra}).status_code == 200
    response = client.post("/predict", json={"project": "1.1", "tasks": [make_task(1, uri(image))]})
    (entry,) = response.json["results"]
    rows = []
    for region in entry["result"]:
        v, w, h = region["value"], region["original_width"], region["original_height"]
        box = [v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100]
        rows.append((v["rectanglelabels"][0], box, region["score"]))
    return sorted(rows)


# Small red squares on a 3000 x 2000 image: at 512 px they blur away. Two sit across seams of the 1024-px tiling
# (tile x-starts 0, 659, 1317, 1976; y-starts 0, 488, 976): x 1015..1029 crosses 1024, y 1480..1494 crosses 1488.
SQUARES = [(100, 100, 114, 114), (1015, 300, 1029, 314), (2500, 1480, 2514, 1494), (2980, 1980, 2994, 1994)]


def test_tiling_finds_small_objects_the_whole_image_loses_once_each(tmp_path: Path) -> None:
    image = canvas(3000, 2000)
    for square in SQUARES:
        paint(image, square, COLOURS["red"])
    assert predict(tmp_path / "whole", image, {}) == []  # 14 px at a 5.9x reduction: no solid red left
    ColourDetector.inputs.clear()
    found = predict(tmp_path / "tiled", image, {"detection": {"tiling": {"tile": 1024, "overlap": 0.2}}})
    assert [label for label, _, _ in found] == ["Car"] * len(SQUARES)  # each once: no duplicates at the seams
    for (_, box, _), square in zip(found, sorted(SQUARES), strict=True):
        assert box == pytest.approx(list(square), abs=3)  # a 2x reduction per tile: within 2 px
    assert sorted(ColourDetector.inputs)[-1][:2] == (2000, 3000)  # the whole image too (whole=true)...
    assert sum(shape[:2] == (1024, 1024) for shape in ColourDetector.inputs) == 12  # ...and 12 full tiles


def test_auto_tiling_leaves_images_below_its_floor_whole(tmp_path: Path) -> None:
    image = canvas(2000, 1500)
    paint(image, (500, 500, 530, 530), COLOURS["red"])
    ColourDetector.inputs.clear()
    assert len(predict(tmp_path, image, {"detection": {"tiling": "auto"}})) == 1
    assert len(ColourDetector.inputs) == 1 and max(ColourDetector.inputs[0][:2]) <= 1024  # whole, and shrunk


def test_tiling_an_image_smaller_than_a_tile_answers_as_the_whole_image_run(tmp_path: Path, tiny) -> None:
    image = np.random.default_rng(3).integers(0, 255, (301, 417, 3), dtype=np.uint8)  # odd size, real tiny OWLv2
    owl = {"model": "owlv2", "model_id": str(tiny("owlv2")), "score_threshold": 0.0}
    client = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    results = []
    for project, extra in [("1.1", {"detection": owl}), ("2.1", {"detection": {**owl, "tiling": {"tile": 512}}})]:
        assert (
            client.post("/setup", json={"project": project, "schema": CONFIG, "extra_params": extra}).status_code == 200
        )
        (entry,) = client.post("/predict", json={"project": project, "tasks": [make_task(1, uri(image))]}).json[
            "results"
        ]
        results.append(entry)
    untiled, tiled = ([{k: v for k, v in r.items() if k != "id"} for r in e["result"]] for e in results)
    assert untiled and tiled == untiled  # (region ids are random)


def test_a_box_a_negative_overlaps_is_dropped_and_a_box_matching_a_negative_never_shows(tmp_path: Path) -> None:
    image = canvas(400, 300)
    paint(image, (100, 100, 120, 120), COLOURS["red"])  # a car
    paint(image, (198, 98, 222, 122), COLOURS["maroon"])  # a "toy car": maroon with a red middle
    paint(image, (200, 100, 220, 120), COLOURS["red"])
    paint(image, (300, 200, 320, 220), COLOURS["maroon"])  # maroon alone: found only by the negative
    found = predict(tmp_path, image, {"negatives": {"Car": ["maroon"]}})
    assert found == [("Car", pytest.approx([100, 100, 120, 120]), pytest.approx(0.8))]


def test_an_ensemble_fuses_its_members_boxes_by_their_weighted_scores(tmp_path: Path) -> None:
    image = canvas(400, 300)
    paint(image, (100, 100, 120, 120), COLOURS["red"])
    members = [{"model": ColourDetector.name}, {"model": f"{ColourDetector.name}.other", "shift": 4, "score": 0.6,
                                                "weight": 3}]  # fmt: skip
    found = predict(tmp_path, image, {"detection": {"models": members}})
    # weighted scores 0.8 * 1 and 0.6 * 3: x = (100 * 0.8 + 104 * 1.8) / 2.6; score = mean(0.8, 1.8) * 2 / (1 + 3)
    x = (100 * 0.8 + 104 * 1.8) / 2.6
    assert found == [("Car", pytest.approx([x, 100, x + 20, 120], abs=1e-3), pytest.approx(0.65))]


def framed(image: np.ndarray, x: int, y: int, frame: tuple[int, int, int]) -> None:
    """A 20-px red square inside a 32-px square of ``frame``."""
    paint(image, (x - 6, y - 6, x + 26, y + 26), frame)
    paint(image, (x, y, x + 20, y + 20), COLOURS["red"])


@pytest.mark.parametrize("action", ["drop", "relabel"])
def test_crop_verification_keeps_drops_or_relabels_by_what_the_crop_shows(tmp_path: Path, action: str) -> None:
    image = canvas(400, 300)
    paint(image, (100, 100, 120, 120), COLOURS["red"])  # crop: red only -> a car, score sqrt(0.8 * 1)
    framed(image, 200, 100, COLOURS["green"])  # the red middle's crop (margin 0.3 = the frame): 400 red, 624 green
    framed(image, 300, 100, GRAY)  # crop: 400 red, 624 gray = background -> dropped whatever the action
    ColourClassifier.batches.clear()
    verify = {"model": ColourClassifier.name, "margin": 0.3, "action": action}
    found = predict(tmp_path, image, {"detection": {"verify": verify}})
    green = 624 / 1024
    want = [
        ("Car", pytest.approx([100, 100, 120, 120]), pytest.approx(0.8**0.5)),
        ("Person", pytest.approx([194, 94, 226, 126]), pytest.approx((0.8 * green) ** 0.5)),
    ]  # the frame itself
    if action == "relabel":
        want.append(("Person", pytest.approx([200, 100, 220, 120]), pytest.approx((0.8 * green) ** 0.5)))
    assert found == sorted(want, key=lambda row: (row[0], row[1].expected))
    assert ColourClassifier.batches == [4]  # the image's four boxes, one classifier call


def test_stages_compose_and_change_the_model_version(tmp_path: Path) -> None:
    client = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    versions = set()
    for detection in [{}, {"tiling": "auto"}, {"verify": {"model": ColourClassifier.name}},
                      {"models": [{"model": ColourDetector.name}]}]:  # fmt: skip
        extra = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name, **detection}}
        response = client.post("/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra})
        versions.add(response.json["model_version"])
    assert len(versions) == 4


def test_grounded_segmentation_masks_the_boxes_its_tiled_detector_found(tmp_path: Path) -> None:
    import tests.fakes  # noqa: F401  (registers fake_segmenter: a mask filling each box)

    config = CONFIG.replace("RectangleLabels", "BrushLabels")
    image = canvas(3000, 2000)
    for square in SQUARES:
        paint(image, square, COLOURS["red"])
    client = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    extra = {"prompts": PROMPTS, "segmentation": {"model": "fake_segmenter"},
             "detection": {"model": ColourDetector.name, "tiling": {"tile": 1024}}}  # fmt: skip
    assert client.post("/setup", json={"project": "1.1", "schema": config, "extra_params": extra}).status_code == 200
    (entry,) = client.post("/predict", json={"project": "1.1", "tasks": [make_task(1, uri(image))]}).json["results"]
    assert [r["value"]["brushlabels"] for r in entry["result"]] == [["Car"]] * len(SQUARES)  # one mask per square


def test_tiling_that_would_cut_an_image_into_too_many_tiles_refuses_that_task(tmp_path: Path) -> None:
    client: FlaskClient = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    # 3000 x 2000 at 256-px tiles sharing half: x ceil(2744 / 128) + 1 = 23, y ceil(1744 / 128) + 1 = 15: 345 tiles
    extra = {"prompts": PROMPTS, "detection": {"model": ColourDetector.name,
                                               "tiling": {"tile": 256, "overlap": 0.5}}}  # fmt: skip
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": extra}).status_code == 200
    ColourDetector.inputs.clear()
    tasks = [make_task(1, uri(canvas(3000, 2000))), make_task(2, uri(canvas(600, 400)))]
    results = client.post("/predict", json={"project": "1.1", "tasks": tasks}).json["results"]
    assert results[0] == [] and isinstance(results[1], dict)  # the small image (6 tiles) is still predicted
    assert all(max(shape[:2]) <= 600 for shape in ColourDetector.inputs)  # not one tile of the large image ran
    assert "into 345 tiles, over 256: use a larger tile or less overlap" in client.get("/").text
