from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

from model_adapters.base import AdapterLoadError, ExamplePrompt, ModelSpec, Query, make_params
from model_adapters.owl import OwlV2, OwlViT
from tests.helpers import image_array
from tests.references import owl_text_and_example_logits

LABELS = ("a cat", "a remote", "dog")


@pytest.fixture(scope="module", params=[OwlViT, OwlV2], ids=["owlvit", "owlv2"])
def owl(request: pytest.FixtureRequest, tiny: Callable[[str], Path]) -> OwlViT | OwlV2:
    cls = request.param
    adapter = cls(ModelSpec(cls.name, str(tiny(cls.name)), device="cpu"))
    adapter.load()
    return adapter


def query(prompts: tuple = LABELS, threshold: float = 0.0) -> Query:
    return Query(prompts, make_params(OwlV2.Params, {"score_threshold": threshold}, owner="owl"))


def reference(owl: OwlViT | OwlV2, image: np.ndarray, labels: list[str], threshold: float, sizes: list) -> dict:
    processor = AutoProcessor.from_pretrained(owl.spec.model_id)
    inputs = processor(text=[labels], images=Image.fromarray(image), return_tensors="pt")
    with torch.inference_mode():
        outputs = owl.model(**inputs)
    return processor.post_process_grounded_object_detection(
        outputs, threshold=threshold, target_sizes=sizes, text_labels=[labels]
    )[0]


def test_equals_the_processor_post_processing(owl: OwlViT | OwlV2) -> None:
    image = image_array(64, 48, seed=1)
    side = max(image.shape[:2])
    sizes = [(side, side)] if owl.pads_to_square else [image.shape[:2]]
    ref = reference(owl, image, list(LABELS), 0.05, sizes)
    (ours,) = owl([image], query(threshold=0.05))
    assert len(ours) == len(ref["scores"]) > 0
    np.testing.assert_allclose(ours.confidence, ref["scores"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(ours.class_id, ref["labels"].numpy())
    np.testing.assert_allclose(ours.xyxy, np.clip(ref["boxes"].numpy(), 0, [64, 48, 64, 48]), atol=1e-4)


def test_single_prompt_equals_the_pipeline_and_multi_prompt_is_its_best_label(owl: OwlViT | OwlV2) -> None:
    """The pipeline runs one pass per label and keeps every (box, label) pair; prelabel keeps each box's best label."""
    image = image_array(48, 48, seed=2)  # square: OWLv2's pipeline boxes are right here
    detector = pipeline("zero-shot-object-detection", model=owl.spec.model_id)
    for labels in (["a cat"], list(LABELS)):
        expected = {  # prelabel clips boxes to the image; the pipeline does not
            (r["label"], round(r["score"], 4), tuple(int(np.clip(v, 0, 48)) for v in r["box"].values()))
            for r in detector(Image.fromarray(image), candidate_labels=labels, threshold=0.05)
        }
        (ours,) = owl([image], query(tuple(labels), 0.05))
        got = {
            (labels[c], round(float(s), 4), tuple(int(v) for v in box))
            for c, s, box in zip(ours.class_id, ours.confidence, ours.xyxy, strict=True)
        }
        assert got <= expected and len(got) > 0
        if len(labels) == 1:
            assert got == expected


def test_owlv2_boxes_map_back_from_the_padded_square_and_stay_inside(tiny: Callable[[str], Path]) -> None:
    """The pipeline scales OWLv2 boxes by (width, height) of a non-square image, which stretches them past the edge."""
    owl = OwlV2(ModelSpec("owlv2", str(tiny("owlv2")), device="cpu"))
    owl.load()
    image = image_array(80, 20, seed=3)  # padded to 80x80 by the processor
    raw = reference(owl, image, ["a cat"], 0.0, [(1, 1)])  # relative to the padded square
    (ours,) = owl([image], query(("a cat",), 0.0))
    np.testing.assert_allclose(ours.xyxy, np.clip(raw["boxes"].numpy() * 80, 0, [80, 20, 80, 20]), atol=1e-4)
    assert (ours.xyxy[:, [0, 2]] <= 80).all() and (ours.xyxy[:, [1, 3]] <= 20).all()
    piped = pipeline("zero-shot-object-detection", model=owl.spec.model_id)(
        Image.fromarray(image), candidate_labels=["a cat"], threshold=0.0
    )
    assert max(r["box"]["ymax"] for r in piped) > 20 or max(r["box"]["xmax"] for r in piped) > 80


def whole_image_box(owl: OwlViT | OwlV2, image: np.ndarray) -> tuple[float, float, float, float]:
    """The box HF's image-guided detection queries: the whole query image (OWLv2: the square it is padded to)."""
    height, width = image.shape[:2]
    side = max(height, width)
    return (0, 0, side, side) if owl.pads_to_square else (0, 0, width, height)


def guided_and_text_logits(owl: OwlViT | OwlV2, target: np.ndarray, example: np.ndarray) -> np.ndarray:
    return owl_text_and_example_logits(owl.model, owl.spec.model_id, target, LABELS, example)[0]


@pytest.mark.parametrize("shape", [(40, 40), (30, 52), (3, 50), (1, 37), (31, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_an_example_box_equals_hf_image_guided_detection(owl: OwlViT | OwlV2, shape: tuple[int, int]) -> None:
    """An example box over the whole example image picks the embedding HF's image-guided detection picks."""
    target, example = image_array(64, 48, seed=4), image_array(shape[1], shape[0], seed=5)
    expected = guided_and_text_logits(owl, target, example)[:, -1]
    (ours,) = owl([target], query((ExamplePrompt(example, whole_image_box(owl, example)),), 0.0))
    assert len(ours) == len(expected)  # threshold 0: every box, in the model's order
    np.testing.assert_allclose(ours.confidence, torch.from_numpy(expected).sigmoid().numpy(), atol=1e-5)
    assert (ours.class_id == 0).all()


def test_example_prompts_change_the_answer_each_box_takes_its_best_text_or_example(owl: OwlViT | OwlV2) -> None:
    target, example = image_array(64, 48, seed=4), image_array(40, 40, seed=5)
    logits = guided_and_text_logits(owl, target, example)
    best = logits.argmax(-1)
    assert (best == len(LABELS)).any() and (best < len(LABELS)).any()  # the example wins some boxes, texts others
    prompts = (*LABELS, ExamplePrompt(example, whole_image_box(owl, example)))
    (ours,) = owl([target], query(prompts, 0.0))
    (texts_only,) = owl([target], query(LABELS, 0.0))
    np.testing.assert_array_equal(ours.class_id, best)
    np.testing.assert_allclose(ours.confidence, torch.from_numpy(logits.max(-1)).sigmoid().numpy(), atol=1e-5)
    assert list(ours.data["class_name"]).count("example 3") == (best == 3).sum()
    assert not np.array_equal(ours.class_id, texts_only.class_id)


def test_text_and_example_prompts_in_one_pass_and_embeddings_are_cached(owl: OwlViT | OwlV2) -> None:
    example = ExamplePrompt(image_array(64, 48, seed=6), (10, 5, 40, 30), key="ex-1")
    calls: list[int] = []
    original = owl.model.image_embedder
    owl.model.image_embedder = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
    try:
        answers = owl([image_array(), image_array(30, 50, 1)], query(("a cat", example)))
        assert len(calls) == 2  # the example image, then the batch
        assert {int(c) for a in answers for c in a.class_id} <= {0, 1}
        owl([image_array()], query(("a cat", example)))
        assert len(calls) == 3  # the example's embedding was reused
    finally:
        owl.model.image_embedder = original  # type: ignore[method-assign]
    embeddings = owl.embed_boxes(example.image, np.array([[10, 5, 40, 30], [0, 0, 64, 48]]))
    assert embeddings.shape == (2, owl.model.config.vision_config.hidden_size)


def test_batch_equals_single_images(owl: OwlViT | OwlV2) -> None:
    images = [image_array(64, 48, seed=s) for s in range(3)]
    for image, together in zip(images, owl(images, query(threshold=0.1)), strict=True):
        (alone,) = owl([image], query(threshold=0.1))
        assert len(together) == len(alone) > 0
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-5)
        np.testing.assert_allclose(together.xyxy, alone.xyxy, atol=1e-4)


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'owlvit' model, not owlv2"):
        OwlV2(ModelSpec("owlv2", str(tiny("owlvit")), device="cpu")).load()
