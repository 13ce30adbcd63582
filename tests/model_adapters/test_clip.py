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
from model_adapters.clip import AltClip, Clip
from tests.helpers import image_array

LABELS = ("a cat", "a remote", "dog")
PIPELINE_TEMPLATE = ("This is a photo of {}.",)  # the zero-shot pipeline's default hypothesis template


@pytest.fixture(scope="module", params=[Clip, AltClip], ids=["clip", "altclip"])
def clip(request: pytest.FixtureRequest, tiny: Callable[[str], Path]) -> Clip | AltClip:
    cls = request.param
    adapter = cls(ModelSpec(cls.name, str(tiny(cls.name)), device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple[str, ...] = LABELS, templates: tuple[str, ...] = PIPELINE_TEMPLATE) -> Query:
    return Query(prompts, ClassifierParams(templates=templates))


def test_equals_the_zero_shot_pipeline(clip: Clip | AltClip) -> None:
    classifier = pipeline("zero-shot-image-classification", model=clip.spec.model_id)
    images = [image_array(64, 48, seed=1), image_array(30, 50, seed=2)]
    answers = clip(images, query())
    for image, ours in zip(images, answers, strict=True):
        expected = {r["label"]: r["score"] for r in classifier(Image.fromarray(image), candidate_labels=list(LABELS))}
        np.testing.assert_allclose(ours.confidence, [expected[label] for label in LABELS], atol=1e-5)
        np.testing.assert_array_equal(ours.class_id, np.arange(len(LABELS)))
        assert ours.metadata["calibration"] == "softmax"
        np.testing.assert_allclose(ours.xyxy, np.tile([0, 0, image.shape[1], image.shape[0]], (len(LABELS), 1)))
    assert not np.allclose(answers[0].confidence, answers[1].confidence)  # the tiny model does see the image


def test_a_template_ensemble_averages_normalised_text_embeddings(clip: Clip | AltClip) -> None:
    templates = ("a photo of a {}.", "a drawing of {}", "{}")
    image = image_array(64, 48, seed=3)
    processor = AutoProcessor.from_pretrained(clip.spec.model_id)
    with torch.inference_mode():
        pixels = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        image_embed = clip.model.get_image_features(pixel_values=pixels).pooler_output
        image_embed = image_embed / image_embed.norm(dim=-1, keepdim=True)
        per_prompt = []
        for label in LABELS:
            tokens = processor.tokenizer([t.format(label) for t in templates], padding=True, return_tensors="pt")
            text = clip.model.get_text_features(**tokens).pooler_output
            mean = (text / text.norm(dim=-1, keepdim=True)).mean(dim=0)
            per_prompt.append(mean / mean.norm())
        expected = (clip.model.logit_scale.exp() * image_embed @ torch.stack(per_prompt).T).softmax(dim=-1)[0]
    (ours,) = clip([image], query(templates=templates))
    np.testing.assert_allclose(ours.confidence, expected.numpy(), atol=1e-5)


def test_text_embeddings_are_computed_once_per_prompt_set(
    clip: Clip | AltClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    original = clip.encode_texts
    monkeypatch.setattr(clip, "encode_texts", lambda texts: (calls.append(texts), original(texts))[1])
    prompts = ("a bird", "a tree")  # a set no other test used, so nothing is cached yet
    clip([image_array(seed=4), image_array(seed=5)], query(prompts))
    clip([image_array(seed=6)], query(prompts))
    assert calls == [["This is a photo of a bird.", "This is a photo of a tree."]]
    clip([image_array(seed=6)], query(prompts, templates=("{}",)))
    assert len(calls) == 2  # other templates are another prompt set


def test_batch_equals_single_images(clip: Clip | AltClip) -> None:
    images = [image_array(64, 48, seed=s) for s in range(3)]
    for image, together in zip(images, clip(images, query()), strict=True):
        (alone,) = clip([image], query())
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-6)


def test_altclip_takes_prompts_in_any_language(tiny: Callable[[str], Path]) -> None:
    altclip = AltClip(ModelSpec("altclip", str(tiny("altclip")), device="cpu"))
    altclip.load()
    prompts = ("猫", "一只狗", "汽车")
    tokens = altclip.processor.tokenizer(list(prompts), padding=True)["input_ids"]
    assert all(len(ids) > 2 for ids in tokens)  # <s>, at least one piece, </s>
    image = image_array(seed=7)
    (ours,) = altclip([image], query(prompts, templates=("{}",)))
    classifier = pipeline("zero-shot-image-classification", model=altclip.spec.model_id)
    results = classifier(Image.fromarray(image), candidate_labels=list(prompts), hypothesis_template="{}")
    expected = {r["label"]: r["score"] for r in results}
    np.testing.assert_allclose(ours.confidence, [expected[p] for p in prompts], atol=1e-5)
    assert list(ours.data["class_name"]) == list(prompts)


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'altclip' model, not clip"):
        Clip(ModelSpec("clip", str(tiny("altclip")), device="cpu")).load()
