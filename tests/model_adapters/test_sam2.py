from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters.base import AdapterLoadError, ModelSpec
from model_adapters.sam import SamParams
from model_adapters.sam2 import Sam2
from model_adapters.segmentation import Click, EmbeddingCache, MaskPrompt
from tests.helpers import image_array

IMAGE = image_array(80, 48, seed=1)  # not square: SAM 2 stretches it to its square input
BOXES = ((2.0, 3.0, 40.0, 30.0), (30.0, 10.0, 78.0, 46.0), (10.0, 20.0, 20.0, 40.0))
PROMPTS = {  # name -> (prompt, multimask output under the "auto" rule)
    "one click": (MaskPrompt(clicks=(Click(20, 30),)), True),
    "two clicks": (MaskPrompt(clicks=(Click(20, 30), Click(60, 10, positive=False))), False),
    "box and clicks": (MaskPrompt(boxes=(BOXES[0],), clicks=(Click(20, 15), Click(5, 5, positive=False))), False),
    "boxes": (MaskPrompt(boxes=BOXES), False),
}


@pytest.fixture(scope="module")
def sam2(tiny: Callable[[str], Path]) -> Sam2:
    adapter = Sam2(ModelSpec("sam2", str(tiny("sam2")), device="cpu"))
    adapter.load()
    return adapter


def reference(sam2: Sam2, image: np.ndarray, prompt: MaskPrompt, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sam2Model + Sam2Processor called by hand (4-level point nesting); the best mask by predicted IoU."""
    processor = AutoProcessor.from_pretrained(sam2.spec.model_id)
    kwargs: dict = {}
    if prompt.clicks:
        kwargs["input_points"] = [[[[c.x, c.y] for c in prompt.clicks]]]
        kwargs["input_labels"] = [[[int(c.positive) for c in prompt.clicks]]]
    if prompt.boxes:
        kwargs["input_boxes"] = [[list(b) for b in prompt.boxes]]
    inputs = processor(images=image, return_tensors="pt", **kwargs)
    with torch.inference_mode():
        out = sam2.model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=multimask)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
    best = out.iou_scores[0].argmax(-1)
    rows = torch.arange(len(best))
    return masks[rows, best].numpy(), out.iou_scores[0][rows, best].numpy()


@pytest.mark.parametrize("name", list(PROMPTS))
def test_equals_sam2_model_and_processor_by_hand(sam2: Sam2, name: str) -> None:
    prompt, multimask = PROMPTS[name]
    got = sam2.segment(IMAGE, prompt)
    masks, scores = reference(sam2, IMAGE, prompt, multimask)
    assert got.mask.shape == masks.shape == (3 if name == "boxes" else 1, 48, 80)
    assert int((got.mask != masks).sum()) == 0
    np.testing.assert_allclose(got.confidence, scores, atol=1e-5)


@pytest.mark.parametrize("shift", [-30.0, 30.0])
def test_scores_stay_within_0_1_however_far_the_iou_head_is_off(sam2: Sam2, shift: float) -> None:
    """SAM 2's IoU head ends in a sigmoid (SAM's does not): scores are its output, within [0, 1] either way."""
    head = [m for m in sam2.model.mask_decoder.iou_prediction_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.bias += shift
        for prompt, multimask in PROMPTS.values():
            got = sam2.segment(IMAGE, prompt)
            _, scores = reference(sam2, IMAGE, prompt, multimask)
            np.testing.assert_allclose(got.confidence, scores, atol=1e-5)
            assert ((got.confidence >= 0) & (got.confidence <= 1)).all()
    finally:
        with torch.no_grad():
            head.bias.copy_(saved)


def test_boxes_share_one_decoder_call_and_equal_box_by_box(sam2: Sam2) -> None:
    calls: list[int] = []
    original = sam2.model.mask_decoder.forward
    sam2.model.mask_decoder.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
    try:
        together = sam2.segment(IMAGE, MaskPrompt(boxes=BOXES))
    finally:
        del sam2.model.mask_decoder.forward
    assert len(calls) == 1
    for i, box in enumerate(BOXES):
        alone = sam2.segment(IMAGE, MaskPrompt(boxes=(box,)))
        np.testing.assert_array_equal(alone.mask[0], together.mask[i])
        np.testing.assert_allclose(alone.confidence[0], together.confidence[i], atol=1e-5)


def test_mask_threshold_param(sam2: Sam2) -> None:
    prompt = PROMPTS["two clicks"][0]
    embedding = sam2.embed_image(IMAGE)
    with torch.inference_mode():
        loose = sam2.decode(embedding, IMAGE, prompt, SamParams(mask_threshold=-0.05))
        strict = sam2.decode(embedding, IMAGE, prompt, SamParams(mask_threshold=0.05))
    assert (strict.mask <= loose.mask).all() and strict.mask.sum() < loose.mask.sum()


def test_second_segment_on_the_same_key_skips_the_image_encoder(sam2: Sam2) -> None:
    sam2.embeddings = EmbeddingCache()
    calls: list[int] = []
    original = sam2.model.get_image_embeddings
    sam2.model.get_image_embeddings = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
    try:
        first = sam2.segment(IMAGE, PROMPTS["one click"][0], image_key="task-1")
        second = sam2.segment(IMAGE, PROMPTS["one click"][0], image_key="task-1")
    finally:
        del sam2.model.get_image_embeddings
    assert len(calls) == 1
    np.testing.assert_array_equal(first.mask, second.mask)
    np.testing.assert_array_equal(first.confidence, second.confidence)


def test_concurrent_segment_calls_equal_sequential_ones(sam2: Sam2) -> None:
    images = [image_array(80, 48, seed=10), image_array(40, 64, seed=11)]
    prompts = [PROMPTS["one click"][0], MaskPrompt(boxes=BOXES[:2])]
    expected = [sam2.segment(i, p, image_key=f"seq-{n}") for n, (i, p) in enumerate(zip(images, prompts, strict=True))]
    jobs = [(i % 2, f"round-{i // 2}") for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: sam2.segment(images[j[0]], prompts[j[0]], image_key=j[1]), jobs))
    for (index, _), answer in zip(jobs, got, strict=True):
        np.testing.assert_array_equal(answer.mask, expected[index].mask)
        np.testing.assert_allclose(answer.confidence, expected[index].confidence, atol=1e-6)


def test_wrong_family_is_named(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(AdapterLoadError, match="'sam' model, not sam2"):
        Sam2(ModelSpec("sam2", str(tiny("sam")), device="cpu")).load()
