"""``prelabel predict``: image files -> Label Studio import JSON with predictions, through the /predict runner."""

from __future__ import annotations

import json
from pathlib import Path

from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from backend.cli import main
from tests.backend.jobs.conftest import EXTRA, regions
from tests.backend.refine.colour_models import COLOURS
from tests.backend.refine.test_stages import CONFIG, canvas, paint


def write(path: Path, red: int, green: int) -> Path:
    pixels = canvas(300, 120)
    for i in range(red):
        paint(pixels, (10 + 40 * i, 10, 30 + 40 * i, 30), COLOURS["red"])
    for i in range(green):
        paint(pixels, (10 + 40 * i, 70, 30 + 40 * i, 90), COLOURS["green"])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_images_become_tasks_with_their_predictions(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "model_dir"))
    images = tmp_path / "shots"
    expected = {"a.png": (2, 1), "b c.png": (0, 1), "deep/d.png": (3, 0)}
    for name, (red, green) in expected.items():
        write(images / name, red, green)
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"not a png")
    (tmp_path / "config.xml").write_text(CONFIG)
    out = tmp_path / "tasks.json"
    code = main(["predict", "--config", str(tmp_path / "config.xml"), str(images), "-o", str(out),
                 "--extra-params", json.dumps(EXTRA), "--image-root-url", "https://files.example.com/batch1/"])  # fmt: skip
    assert code == 1  # one image could not be predicted
    tasks = json.loads(out.read_text())
    urls = [t["data"]["image"] for t in tasks]
    assert urls == [f"https://files.example.com/batch1/{n}" for n in ("a.png", "b%20c.png", "broken.png",
                                                                      "deep/d.png")]  # fmt: skip
    interface = LabelInterface(CONFIG)
    by_name = dict(zip(("a.png", "b c.png", "broken.png", "deep/d.png"), tasks, strict=True))
    assert "predictions" not in by_name["broken.png"]
    for name, counts in expected.items():
        (prediction,) = by_name[name]["predictions"]
        assert regions(prediction) == counts and interface.validate_prediction(prediction)
    summary = capsys.readouterr().out
    assert "4 tasks written" in summary and "3 predicted, 1 without a prediction" in summary and "broken.png" in summary


def test_by_default_images_are_named_as_label_studio_serves_local_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "model_dir"))
    one = write(tmp_path / "files" / "set 1" / "x.png", 1, 0)
    (tmp_path / "config.xml").write_text(CONFIG)
    out = tmp_path / "tasks.json"
    assert main(["predict", "--config", str(tmp_path / "config.xml"), str(one), "-o", str(out),
                 "--extra-params", json.dumps(EXTRA)]) == 0  # fmt: skip
    (task,) = json.loads(out.read_text())
    assert task["data"]["image"] == "/data/local-files/?d=x.png" and regions(task["predictions"][0]) == (1, 0)


def test_a_missing_path_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.xml").write_text(CONFIG)
    assert main(["predict", "--config", str(tmp_path / "config.xml"), str(tmp_path / "nope"), "-o",
                 str(tmp_path / "t.json")]) == 2  # fmt: skip
    assert "nope is neither an image file nor a folder" in capsys.readouterr().err
