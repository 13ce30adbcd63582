from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

from model_adapters.base import AdapterLoadError, ModelSpec, Query
from model_adapters.classification import ClassifierParams
from model_adapters.siglip import Siglip, Siglip2
from tests.helpers import image_array

LABELS = ("a cat", "a remote", "dog")
PIPELINE_TEMPLATE = ("This is a photo of {}.",)


@pytest.fixture(scope="module")
def siglip(tiny: Callable[[str], Path]) -> Siglip:
    adapter = Siglip(ModelSpec("siglip", str(tiny("siglip")), device="cpu"))
    adapter.load()
    return adapter


@pytest.fixture(scope="module")
def siglip2(tiny: Callable[[str], Path]) -> Siglip2:
    adapter = Siglip2(ModelSpec("siglip2", str(tiny("siglip2")), device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple[str, ...] = LABELS, templates: tuple[str, ...] = PIPELINE_TEMPLATE) -> Query:
    return Query(prompts, ClassifierParams(templates=templates))


def test_siglip_equals_the_zero_shot_pipeline(siglip: Siglip) -> None:
    classifier = pipeline("zero-shot-image-classification", model=siglip.spec.model_id)
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    answers = siglip(images, query())
    for image, ours in zip(images, answers, strict=True):
        expected = {r["label"]: r["score"] for r in classifier(Image.fromarray(image), candidate_labels=list(LABELS))}
        np.testing.assert_allclose(ours.confidence, [expected[label] for label in LABELS], atol=1e-5)
        assert ours.metadata["calibration"] == "sigmoid"
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


def test_siglip_pads_texts_to_the_full_length(siglip: Siglip, monkeypatch: pytest.MonkeyPatch) -> None:
    """SigLIP pools the last token, so padding to the longest text would change every embedding."""
    lengths: list[int] = []
    original = siglip.model.get_text_features
    monkeypatch.setattr(
        siglip.model, "get_text_features", lambda **kw: (lengths.append(kw["input_ids"].shape[1]), original(**kw))[1]
    )
    siglip([image_array(seed=3)], query(("a house",)))
    assert lengths == [64]


def test_siglip2_equals_the_model_and_processor_by_hand(siglip2: Siglip2) -> None:
    processor = AutoProcessor.from_pretrained(siglip2.spec.model_id)
    images = [image_array(64, 48, seed=1), image_array(20, 90, seed=2)]  # NaFlex keeps each aspect ratio
    texts = [PIPELINE_TEMPLATE[0].format(label) for label in LABELS]
    inputs = processor(text=texts, images=[Image.fromarray(i) for i in images], return_tensors="pt")
    assert {"pixel_attention_mask", "spatial_shapes"} <= set(inputs)
    with torch.inference_mode():
        expected = siglip2.model(**inputs).logits_per_image.sigmoid().numpy()
    answers = siglip2(images, query())
    np.testing.assert_allclose(np.stack([a.confidence for a in answers]), expected, atol=1e-5)
    assert all(a.metadata["calibration"] == "sigmoid" for a in answers)
    assert not np.allclose(answers[0].confidence, answers[1].confidence)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_batch_equals_single_images(family: str, request: pytest.FixtureRequest) -> None:
    adapter = request.getfixturevalue(family)
    images = [image_array(64, 48, seed=4), image_array(20, 90, seed=5), image_array(50, 50, seed=6)]
    for image, together in zip(images, adapter(images, query()), strict=True):
        (alone,) = adapter([image], query())
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-6)


def test_siglip2_also_loads_fixres_checkpoints_in_the_siglip_layout(tiny: Callable[[str], Path]) -> None:
    """SigLIP 2 FixRes checkpoints (e.g. google/siglip2-base-patch16-224) are ``SiglipModel``s."""
    adapter = Siglip2(ModelSpec("siglip2", str(tiny("siglip")), device="cpu"))
    adapter.load()
    assert type(adapter.model).__name__ == "SiglipModel"
    (answer,) = adapter([image_array(seed=7)], query())
    assert np.isfinite(answer.confidence).all()


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'siglip2' model, not siglip"):
        Siglip(ModelSpec("siglip", str(tiny("siglip2")), device="cpu")).load()
    with pytest.raises(AdapterLoadError, match="'clip' model, not siglip2"):
        Siglip2(ModelSpec("siglip2", str(tiny("clip")), device="cpu")).load()
