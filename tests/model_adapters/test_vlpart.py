"""The vlpart adapter: VLPart's prompt texts through open_clip, boxes and masks from the ported network (R50 from
the original's tiny fixture; Swin-B cascade from a tiny random checkpoint), and /predict end to end."""

from __future__ import annotations

import json
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from label_studio_sdk.label_interface import LabelInterface

from backend.app import create_app
from backend.settings import ServerSettings
from model_adapters.base import AdapterLoadError, ModelSpec, Query, SettingsError, make_params
from model_adapters.detic_net.checkpoint import load_detic
from model_adapters.detic_net.roi_heads import DetectionSettings, classifier_weight
from model_adapters.detic_net.rpn import RPNSettings
from model_adapters.detic_net.vlpart import VLPartArch, VLPartNet
from model_adapters.vlpart import VLPart, VLPartParams
from tests.helpers import data_uri, image_array, make_task
from tests.tiny_models import build_open_clip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "detic"


@pytest.fixture(scope="module")
def vlpart(tiny: Any) -> VLPart:
    adapter = VLPart(ModelSpec("vlpart", str(tiny("vlpart")), device="cpu"))
    adapter.load()
    return adapter


def params(**values: Any) -> VLPartParams:
    return make_params(
        VLPartParams, {"min_size": 320, "max_size": 512, "task": "segmentation", **values}, owner="vlpart"
    )


def test_prompts_read_as_vlpart_demo_texts_and_are_cached(vlpart: VLPart) -> None:
    import open_clip

    assert vlpart.prompt_texts(("Dog:Head", "cat")) == ("a dog head", "a cat")
    name = vlpart.default_text_encoder
    assert name.startswith("local-dir:") and name.endswith("clip-rn50")  # found beside the checkpoint
    model, _ = open_clip.create_model_from_pretrained(name, None)
    with torch.inference_mode():
        expected = model.eval().encode_text(open_clip.get_tokenizer(name)(["a dog head", "a cat"]))
    first = vlpart.text(name, ("a dog head", "a cat"))
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    assert vlpart.text(name, ("a dog head", "a cat")) is first


def test_answers_boxes_masks_and_prompt_names(vlpart: VLPart) -> None:
    image = image_array(90, 70)
    (out,) = vlpart([image], Query(("dog:head", "cat"), params(score_threshold=0.0)))
    assert 0 < len(out) <= 300 and out.mask is not None and out.mask.shape == (len(out), 70, 90)
    assert ((out.xyxy >= 0) & (out.xyxy <= [90, 70, 90, 70])).all()
    assert list(out.data["class_name"]) == [("dog:head", "cat")[i] for i in out.class_id]
    (none,) = vlpart([image], Query(("cat",), params(score_threshold=0.999)))
    assert len(none) == 0 and none.mask.shape == (0, 70, 90)


def test_a_detic_checkpoint_or_bad_sizes_are_refused() -> None:
    with pytest.raises(AdapterLoadError, match="is a Detic/CoDet checkpoint; use the detic or codet adapter"):
        VLPart(ModelSpec("vlpart", str(FIX / "tiny_detic_swinb.pth"), device="cpu")).load()
    with pytest.raises(SettingsError, match="64 <= min_size <= max_size"):
        make_params(VLPartParams, {"min_size": 900, "max_size": 800}, owner="vlpart")
    assert np.isclose(VLPartParams().score_threshold, 0.5)


# ----------------------------------------------------------------------------------------- Swin-B cascade variant

SWINB_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="boxes" toName="image"><Label value="dog:head"/><Label value="cat"/></RectangleLabels>
<PolygonLabels name="outline" toName="image"><Label value="dog:head"/><Label value="cat"/></PolygonLabels>
</View>"""


@pytest.fixture(scope="module")
def swinb_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight VLPart Swin-B cascade saved as the original's checkpoint (names of
    ``manifest_vlpart_swinb_lvis.json``, in ``{"model": ...}``, training-only buffers included), with a 32-d
    open_clip text tower in ``clip-rn50/`` beside it."""
    path = tmp_path_factory.mktemp("vlpart_swinb")
    build_open_clip(path / "clip-rn50")
    torch.manual_seed(0)
    arch = VLPartArch(backbone="swin", swin_embed_dim=16, swin_depths=(2, 2, 2, 2), swin_heads=(1, 2, 4, 8),
                      fpn_channels=16, fc_dim=32, zs_dim=32, mask_conv_dim=16)  # fmt: skip
    names = {"rpn_head.": "proposal_generator.rpn_head.", "mask_head.": "roi_heads.mask_head."}
    state = {}
    for key, value in VLPartNet(arch).state_dict().items():
        prefix = next((p for p in names if key.startswith(p)), None)
        state[names[prefix] + key[len(prefix) :] if prefix else key] = value
    for k in range(3):
        state[f"roi_heads.box_predictor.{k}.cls_score.zs_weight"] = torch.randn(32, 6)
        state[f"roi_heads.box_predictor.{k}.freq_weight"] = torch.rand(5)
    manifest = json.loads((FIX / "manifest_vlpart_swinb_lvis.json").read_text())
    deep = re.compile(r"layers\.2\.blocks\.([2-9]|1\d)\.")  # the full model's stage 3 has 18 blocks, this one 2
    assert set(state) == {k["name"] for k in manifest["keys"] if not deep.search(k["name"])}  # the original's names
    torch.save({"model": state, "iteration": 0}, path / "swinbase_cascade_tiny.pth")
    return path / "swinbase_cascade_tiny.pth"


def test_swinb_cascade_checkpoint_loads_as_the_cascade_and_predicts(swinb_checkpoint: Path, tmp_path: Path) -> None:
    adapter = VLPart(ModelSpec("vlpart", str(swinb_checkpoint), device="cpu"))
    adapter.load()
    assert isinstance(adapter.net, VLPartNet) and adapter.net.cascade
    assert len(adapter.net.roi_heads.box_head) == 3
    image = image_array(90, 70)
    (direct,) = adapter([image], Query(("dog:head", "cat"), params(score_threshold=0.0)))
    assert 0 < len(direct) <= 300 and direct.mask.shape == (len(direct), 70, 90)
    model = {"model": "vlpart", "model_id": str(swinb_checkpoint), "device": "cpu", "min_size": 320,
             "max_size": 512, "score_threshold": 0.0}  # fmt: skip
    extra = {"detection": model, "segmentation": {**model, "min_area": 1}}
    client = create_app(ServerSettings(model_dir=tmp_path, preload_projects=0)).test_client()
    body = {"project": "4.1", "schema": SWINB_CONFIG, "extra_params": extra, "hostname": "http://localhost:8080"}
    assert client.post("/setup", json=body).status_code == 200
    body = {"tasks": [make_task(1, data_uri(90, 70))], "project": "4.1", "label_config": SWINB_CONFIG, "params": {}}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    (entry,) = response.json["results"]
    assert LabelInterface(SWINB_CONFIG).validate_prediction(entry)
    by_type: dict[str, list[dict]] = {}
    for region in entry["result"]:
        by_type.setdefault(region["type"], []).append(region)
    assert {"rectanglelabels", "polygonlabels"} <= set(by_type)
    best = max(by_type["rectanglelabels"], key=lambda r: r["score"])
    top = int(np.argmax(direct.confidence))
    assert best["value"]["rectanglelabels"] == [direct.data["class_name"][top]]
    assert np.isclose(best["score"], direct.confidence[top], atol=1e-5)
    x0, y0, x1, y1 = direct.xyxy[top]
    box = best["value"]
    assert np.allclose([box["x"], box["y"], box["width"], box["height"]],
                       [100 * x0 / 90, 100 * y0 / 70, 100 * (x1 - x0) / 90, 100 * (y1 - y0) / 70], atol=1e-3)  # fmt: skip


def test_swinb_cascade_scores_are_vlparts_fusion(swinb_checkpoint: Path) -> None:
    """``CascadeVLMROIHeads`` at test time: sqrt(mean of the three stages' sigmoids * sigmoid(objectness)), boxes
    of the last stage, and no one-class-per-proposal filter (unlike Detic)."""
    net = load_detic(swinb_checkpoint)
    assert isinstance(net, VLPartNet)
    image = torch.rand(1, 3, 96, 128) * 2 - 1
    zs = classifier_weight(torch.randn(3, 32))
    with torch.no_grad():
        feats = net.backbone(image)
        proposals = net.proposals(feats, [(96, 128)], RPNSettings())
        (stages,) = net.run_cascade([feats[f"p{lv}"] for lv in range(2, 6)], proposals, [(96, 128)], zs)
        (det,) = net(image, [(96, 128)], [(96, 128)], zs, settings=DetectionSettings(0.0, 0.5, 300, False))
    assert len(stages) == 3 and len(det.scores) > 0
    index, objectness = det.extras["proposal_index"], proposals[0][1]
    mean = sum(torch.sigmoid(s.logits[index, det.classes]) for s in stages) / 3
    torch.testing.assert_close(det.scores, (mean * torch.sigmoid(objectness[index])).sqrt(), atol=1e-6, rtol=1e-5)
    last = stages[-1].pred_boxes[index].clamp(min=0)
    last[:, 0::2], last[:, 1::2] = last[:, 0::2].clamp(max=128), last[:, 1::2].clamp(max=96)
    torch.testing.assert_close(det.boxes, last)
    assert len(set(index.tolist())) < len(index)  # some proposal answers for more than one prompt
