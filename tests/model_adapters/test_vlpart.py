"""The vlpart adapter: VLPart's prompt texts through open_clip, boxes and masks from the ported network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_adapters.base import AdapterLoadError, ModelSpec, Query, SettingsError, make_params
from model_adapters.vlpart import VLPart, VLPartParams
from tests.helpers import image_array

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
