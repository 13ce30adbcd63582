"""The detic/codet adapters: prompts -> CLIP classifier (cached), boxes and masks, and /predict end to end."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from transformers import AutoTokenizer, CLIPModel

from backend.app import create_app
from backend.settings import ServerSettings
from model_adapters.base import AdapterLoadError, ModelSpec, Query, SettingsError, make_params
from model_adapters.detic import CoDet, Detic, DeticParams
from tests.helpers import data_uri, image_array, make_task

CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="tabby"/><Label value="remote"/></RectangleLabels>
<BrushLabels name="paint" toName="image"><Label value="tabby"/><Label value="remote"/></BrushLabels>
<PolygonLabels name="outline" toName="image"><Label value="tabby"/><Label value="remote"/></PolygonLabels>
</View>"""


@pytest.fixture(scope="module")
def detic(tiny: Any) -> Detic:
    adapter = Detic(ModelSpec("detic", str(tiny("detic")), device="cpu"))
    adapter.load()
    return adapter


def params(**values: Any) -> DeticParams:
    return make_params(DeticParams, {"min_size": 320, "max_size": 512, "task": "segmentation", **values}, owner="detic")


def test_classifier_is_clip_text_of_a_plus_name_and_cached(detic: Detic) -> None:
    folder = detic.default_text_encoder
    assert Path(folder).name == "clip-vit-base-patch32"  # found beside the checkpoint
    tokens = AutoTokenizer.from_pretrained(folder)(["a tabby", "a remote"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = CLIPModel.from_pretrained(folder).get_text_features(**tokens)
    expected = getattr(expected, "pooler_output", expected)
    first = detic.text(folder, ("a tabby", "a remote"))
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    assert detic.text(folder, ("a tabby", "a remote")) is first  # one encoder pass per prompt set


def test_answers_boxes_masks_and_prompt_names(detic: Detic) -> None:
    image = image_array(90, 70)
    (none,) = detic([image], Query(("tabby",), params(score_threshold=0.999)))
    assert len(none) == 0 and none.mask.shape == (0, 70, 90)
    (out,) = detic([image], Query(("tabby", "remote"), params(score_threshold=0.0)))
    assert 0 < len(out) <= 300
    assert out.mask is not None and out.mask.shape == (len(out), 70, 90) and out.mask.any()
    assert ((out.xyxy >= 0) & (out.xyxy <= [90, 70, 90, 70])).all()
    assert set(out.class_id) <= {0, 1}
    assert list(out.data["class_name"]) == [("tabby", "remote")[i] for i in out.class_id]
    assert (np.diff(out.confidence) <= 0).all()
    (high,) = detic([image], Query(("tabby", "remote"), params(score_threshold=float(np.median(out.confidence)))))
    assert 0 < len(high) < len(out) and (high.confidence > np.median(out.confidence)).all()


def test_batch_equals_single_images_and_only_equal_sizes_share_a_batch(detic: Detic) -> None:
    a, b = image_array(64, 48, seed=1), image_array(64, 48, seed=2)
    query = Query(("tabby", "remote"), params(score_threshold=0.0))
    both = detic([a, b], query)
    for image, batched in zip((a, b), both, strict=True):
        (alone,) = detic([image], query)
        np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=1e-4)
        np.testing.assert_array_equal(batched.class_id, alone.class_id)
    assert detic.batch_key((48, 64, 3)) != detic.batch_key((64, 48, 3))


def test_settings_and_checkpoint_errors(tmp_path: Path) -> None:
    for sizes in ({"min_size": 900, "max_size": 800}, {"min_size": 128, "max_size": 128}):
        with pytest.raises(SettingsError, match="160 <= min_size <= max_size"):
            make_params(DeticParams, sizes, owner="detic")
    with pytest.raises(AdapterLoadError, match="no such file"):
        Detic(ModelSpec("detic", str(tmp_path / "absent.pth"), device="cpu")).load()
    bad = tmp_path / "other.pth"
    torch.save({"model": {"backbone.something.weight": torch.zeros(1)}}, bad)
    with pytest.raises(AdapterLoadError, match="codet: .*missing key"):
        CoDet(ModelSpec("codet", str(bad), device="cpu")).load()
    vlpart = Path(__file__).resolve().parents[1] / "fixtures" / "detic" / "tiny_vlpart_r50.pth"
    with pytest.raises(AdapterLoadError, match="is a VLPart checkpoint; use the vlpart adapter"):
        Detic(ModelSpec("detic", str(vlpart), device="cpu")).load()


def test_predict_serves_rectangles_brushes_and_polygons_from_one_model(tmp_path: Path, tiny: Any, detic: Detic) -> None:
    model = {"model": "detic", "model_id": str(tiny("detic")), "device": "cpu", "min_size": 320, "max_size": 512,
             "score_threshold": 0.0}  # fmt: skip
    extra = {"detection": model, "segmentation": {**model, "min_area": 1}}
    client = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    body = {"project": "3.1", "schema": CONFIG, "extra_params": extra, "hostname": "http://localhost:8080"}
    assert client.post("/setup", json=body).status_code == 200
    body = {"tasks": [make_task(1, data_uri(90, 70))], "project": "3.1", "label_config": CONFIG, "params": {}}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    (entry,) = response.json["results"]
    assert LabelInterface(CONFIG).validate_prediction(entry)
    by_type: dict[str, list[dict]] = {}
    for region in entry["result"]:
        by_type.setdefault(region["type"], []).append(region)
    assert {"rectanglelabels", "brushlabels", "polygonlabels"} <= set(by_type)
    (direct,) = detic([image_array(90, 70)], Query(("tabby", "remote"), params(score_threshold=0.0)))
    best = by_type["brushlabels"][int(np.argmax([r["score"] for r in by_type["brushlabels"]]))]
    mask = decode_rle(best["value"]["rle"]).reshape(70, 90, 4)[..., 3] > 0
    top = int(np.argmax(direct.confidence))
    assert best["value"]["brushlabels"] == [direct.data["class_name"][top]]
    assert (mask == direct.mask[top]).mean() > 0.99
