from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor

from model_adapters.base import CLASS_NAME_DATA_FIELD, ModelSpec, Query, make_params
from model_adapters.florence2 import SEGMENTATION_TOKEN, Florence2Segmentation
from tests.helpers import image_array
from tests.model_adapters.forced import force, next_token_probs

PROMPTS = ("cat", "dog")
IMAGES = (image_array(80, 48, seed=1), image_array(30, 51, seed=2))  # odd sizes, landscape and portrait
# An object of two outlines (split by <sep>), as Florence-2 answers a referring expression.
SEPARATED = (
    ("outline 1", "<loc_100><loc_100><loc_500><loc_100><loc_500><loc_600>"),
    ("outline 2", "<sep><loc_700><loc_700><loc_900><loc_700><loc_800><loc_900>"),
    ("end", "</s>"),
)
# Two objects, each in its <poly> group.
GROUPED = (
    ("open 1", "<poly>"),
    ("object 1", "<loc_0><loc_0><loc_999><loc_0><loc_999><loc_999><loc_0><loc_999>"),
    ("close 1", "</poly>"),
    ("open 2", "<poly>"),
    ("object 2", "<loc_200><loc_300><loc_400><loc_300><loc_300><loc_500>"),
    ("close 2", "</poly>"),
    ("end", "</s>"),
)


@pytest.fixture(scope="module")
def segmenter(tiny: Callable[[str], Path]) -> Florence2Segmentation:
    adapter = Florence2Segmentation(ModelSpec("florence2_seg", str(tiny("florence2")), device="cpu"))
    adapter.load()
    return adapter


def query(**params: object) -> Query:
    values = {"max_new_tokens": 40, **params}
    return Query(PROMPTS, make_params(Florence2Segmentation.Params, values, owner="florence2_seg"))


def answer_ids(segmenter: Florence2Segmentation, pieces: tuple[tuple[str, str], ...]) -> tuple[list[int], list[str]]:
    tokenizer = segmenter.processor.tokenizer
    ids, owner = [], []
    for name, text in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in piece
        ids += piece
        owner += [name] * len(piece)
    return ids, owner


def reference(segmenter: Florence2Segmentation, image: np.ndarray, prompt: str) -> dict:
    """By hand: generate, batch_decode, the processor's post_process_generation on the original size, each
    polygon filled as PIL draws it; token probabilities from one teacher-forced decoder pass."""
    processor = AutoProcessor.from_pretrained(segmenter.spec.model_id)
    inputs = processor(images=image, text=SEGMENTATION_TOKEN + prompt, return_tensors="pt",
                       input_data_format="channels_last")  # fmt: skip
    with torch.inference_mode():
        seq = segmenter.model.generate(**inputs, max_new_tokens=40)[0]
        logits = segmenter.model(**inputs, decoder_input_ids=seq[None, :-1]).logits[0]
    text = processor.batch_decode(seq[None], skip_special_tokens=False)[0]
    size = (image.shape[1], image.shape[0])
    parsed = processor.post_process_generation(text=text, task=SEGMENTATION_TOKEN, image_size=size)
    masks = []
    for polygons in parsed[SEGMENTATION_TOKEN]["polygons"]:
        canvas = Image.new("L", size, 0)
        for flat in polygons:
            ImageDraw.Draw(canvas).polygon(list(zip(flat[0::2], flat[1::2], strict=True)), fill=1)
        masks.append(np.asarray(canvas, dtype=bool))
    return {"masks": masks, "probs": next_token_probs(logits, seq, 1), "parsed": parsed[SEGMENTATION_TOKEN]}


@pytest.mark.parametrize("pieces", [SEPARATED, GROUPED], ids=["sep", "poly"])
def test_forced_outlines_equal_the_processors_parse_with_token_scores(
    segmenter: Florence2Segmentation, monkeypatch: pytest.MonkeyPatch, pieces: tuple[tuple[str, str], ...]
) -> None:
    ids, owner = answer_ids(segmenter, pieces)
    force(monkeypatch, segmenter.model, lambda: ids)
    got = segmenter(list(IMAGES), query())
    objects = ["outline 1"] if pieces is SEPARATED else ["object 1", "object 2"]
    for image, det in zip(IMAGES, got, strict=True):
        height, width = image.shape[:2]
        assert det.mask.shape == (len(objects) * len(PROMPTS), height, width)
        assert det.data[CLASS_NAME_DATA_FIELD].tolist() == [p for p in PROMPTS for _ in objects]
        for index, prompt in enumerate(PROMPTS):
            ref = reference(segmenter, image, prompt)
            assert len(ref["masks"]) == len(objects)
            if pieces is SEPARATED:
                assert len(ref["parsed"]["polygons"][0]) == 2  # one object, two outlines
                scored = [{"outline 1", "outline 2"}]
            else:
                scored = [{"object 1"}, {"object 2"}]
            for k, (mask, names) in enumerate(zip(ref["masks"], scored, strict=True)):
                row = index * len(objects) + k
                assert mask.any() and (det.mask[row] == mask).all()
                ys, xs = np.nonzero(mask)
                np.testing.assert_allclose(det.xyxy[row], [xs.min(), ys.min(), xs.max(), ys.max()])
                expected = np.mean([p for p, o in zip(ref["probs"], owner, strict=True) if o in names])
                np.testing.assert_allclose(det.confidence[row], expected, rtol=1e-4)


def test_an_answer_without_outlines_and_the_threshold_give_no_masks(
    segmenter: Florence2Segmentation, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, _ = answer_ids(segmenter, (("text", "a cat</s>"),))
    force(monkeypatch, segmenter.model, lambda: ids)
    (det,) = segmenter([IMAGES[0]], query())
    assert det.mask.shape == (0, 48, 80) and det.xyxy.shape == (0, 4)
    ids, _ = answer_ids(segmenter, GROUPED)
    force(monkeypatch, segmenter.model, lambda: ids)
    (det,) = segmenter([IMAGES[0]], query(score_threshold=0.999))
    assert len(det) == 0
