from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, BlipForImageTextRetrieval

from model_adapters.base import ModelSpec, Query, SettingsError, make_params
from model_adapters.blip import Blip, BlipParams
from tests.helpers import image_array

LABELS = ("a cat", "a remote", "dog")
TEMPLATE = ("a photo of {}.",)


@pytest.fixture(scope="module")
def blip_dir(tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BLIP with its image tower's weights re-drawn at std 0.02.

    ``BlipVisionConfig.initializer_range`` defaults to 1e-10, so the tiny model's vision weights are ~0 and every
    image gives the same features, which would make these comparisons vacuous.
    """
    source = tiny("blip")
    model = BlipForImageTextRetrieval.from_pretrained(source)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.vision_model.named_parameters():
            if parameter.ndim > 1 or "embedding" in name:
                parameter.normal_(std=0.02)
    path = tmp_path_factory.mktemp("blip_seen")
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(source).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def blip(blip_dir: Path) -> Blip:
    adapter = Blip(ModelSpec("blip", str(blip_dir), device="cpu"))
    adapter.load()
    return adapter


def query(head: str, prompts: tuple[str, ...] = LABELS, templates: tuple[str, ...] = TEMPLATE) -> Query:
    return Query(prompts, make_params(BlipParams, {"head": head, "templates": list(templates)}, owner="blip"))


def by_hand(blip: Blip, image: np.ndarray, texts: list[str], use_itm_head: bool) -> torch.Tensor:
    """``itm_score`` of the image against each text, from the model's own forward."""
    processor = AutoProcessor.from_pretrained(blip.spec.model_id)
    inputs = processor(images=[Image.fromarray(image)] * len(texts), text=texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return blip.model(**inputs, use_itm_head=use_itm_head).itm_score


def test_itc_is_the_models_cosine_scaled_by_blips_temperature(blip: Blip) -> None:
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    texts = [TEMPLATE[0].format(label) for label in LABELS]
    answers = blip(images, query("itc"))
    for image, ours in zip(images, answers, strict=True):
        cosine = by_hand(blip, image, texts, use_itm_head=False)[0]  # (texts,) for this image
        expected = (cosine / 0.07).softmax(dim=-1).numpy()
        np.testing.assert_allclose(ours.confidence, expected, atol=1e-5)
        assert ours.metadata["calibration"] == "softmax"
    assert math.exp(blip.model.config.logit_scale_init_value) == pytest.approx(1 / 0.07, rel=1e-4)
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


def test_itm_is_the_match_probability_of_each_pair(blip: Blip) -> None:
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    texts = [TEMPLATE[0].format(label) for label in LABELS]
    answers = blip(images, query("itm"))
    for image, ours in zip(images, answers, strict=True):
        expected = by_hand(blip, image, texts, use_itm_head=True).softmax(dim=-1)[:, 1].numpy()
        np.testing.assert_allclose(ours.confidence, expected, atol=1e-5)
        assert ours.metadata["calibration"] == "sigmoid"
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


def test_itm_pairs_in_small_chunks_give_the_same_answer(blip: Blip, monkeypatch: pytest.MonkeyPatch) -> None:
    images = [image_array(64, 48, seed=s) for s in range(3)]
    whole = blip(images, query("itm"))
    passes: list[int] = []
    original = blip.model.text_encoder.forward
    monkeypatch.setattr(blip, "itm_pairs_per_pass", 2)
    monkeypatch.setattr(
        blip.model.text_encoder, "forward", lambda **kw: (passes.append(kw["input_ids"].shape[0]), original(**kw))[1]
    )
    chunked = blip(images, query("itm"))
    assert passes == [2, 2, 2, 2, 1]  # 3 images x 3 prompts
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)


def test_itm_averages_probabilities_over_templates(blip: Blip) -> None:
    image = image_array(64, 48, seed=3)
    templates = ("a photo of {}.", "{}")
    per_template = [by_hand(blip, image, [t.format(p) for p in LABELS], True).softmax(-1)[:, 1] for t in templates]
    (ours,) = blip([image], query("itm", templates=templates))
    np.testing.assert_allclose(ours.confidence, torch.stack(per_template).mean(dim=0).numpy(), atol=1e-5)


@pytest.mark.parametrize("head", ["itc", "itm"])
def test_batch_equals_single_images(blip: Blip, head: str) -> None:
    images = [image_array(64, 48, seed=s) for s in range(3)]
    for image, together in zip(images, blip(images, query(head)), strict=True):
        (alone,) = blip([image], query(head))
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-6)


def test_unknown_head_is_refused() -> None:
    with pytest.raises(SettingsError, match="blip.head must be one of 'itc', 'itm'"):
        make_params(BlipParams, {"head": "both"}, owner="blip")
    assert BlipParams().head == "itc"
