from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters.base import CLASS_NAME_DATA_FIELD, ModelSpec, Query, make_params
from model_adapters.kosmos2 import DESCRIBE_PROMPT, Kosmos2
from tests.helpers import image_array
from tests.model_adapters.forced import force, next_token_probs

PROMPTS = ("cat", "dog", "remote")
# The forced answer in pieces, so the tokens of each phrase and box are known by construction.
PIECES = (
    ("cat phrase", "<phrase> a cat</phrase><object>"),
    ("cat box", "<patch_index_0044><patch_index_0863>"),
    ("between", "</object> and"),
    ("dog phrase", "<phrase> dogs</phrase><object>"),
    ("dog box 1", "<patch_index_0005><patch_index_0911>"),
    ("between", "</delimiter_of_multi_objects/>"),
    ("dog box 2", "<patch_index_0100><patch_index_0200>"),
    ("rest", "</object> near<phrase> a tree</phrase><object><patch_index_0001><patch_index_0002></object>"),
    ("rest", "<object><patch_index_0010><patch_index_0020></object>."),
)
IMAGES = (image_array(80, 48, seed=1), image_array(30, 50, seed=2))  # odd sizes, landscape and portrait


@pytest.fixture(scope="module")
def kosmos2(tiny: Callable[[str], Path]) -> Kosmos2:
    adapter = Kosmos2(ModelSpec("kosmos2", str(tiny("kosmos2")), device="cpu"))
    adapter.load()
    return adapter


def query(**params: object) -> Query:
    return Query(PROMPTS, make_params(Kosmos2.Params, {"max_new_tokens": 60, **params}, owner="kosmos2"))


def answer_ids(kosmos2: Kosmos2, *texts: str) -> tuple[list[int], list[int]]:
    """Token ids of the texts one after the other, then end-of-sequence; and each token's text index."""
    tokenizer = kosmos2.processor.tokenizer
    ids, owner = [], []
    for i, text in enumerate(texts):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        owner += [i] * len(piece)
    return [*ids, tokenizer.eos_token_id], [*owner, -1]


def frame_by_hand(width: int, height: int) -> tuple[float, float, float, float]:
    """The tiny processor resizes the shorter side to 32 (the longer to int(long * 32 / short)), crops 32 x 32."""
    if width >= height:
        resized = int(width * 32 / height)
        left = (resized - 32) // 2
        return left * width / resized, 0.0, (left + 32) * width / resized, float(height)
    resized = int(height * 32 / width)
    top = (resized - 32) // 2
    return 0.0, top * height / resized, float(width), (top + 32) * height / resized


def reference(kosmos2: Kosmos2, images: tuple[np.ndarray, ...], prompt: str, n_new: int) -> list[dict]:
    """The model run by hand: generate, batch_decode, the processor's post_process_generation, and each
    generated token's probability from one teacher-forced forward pass over the whole sequence."""
    processor = AutoProcessor.from_pretrained(kosmos2.spec.model_id)
    out = []
    for image in images:
        inputs = processor(images=image, text=prompt, return_tensors="pt", input_data_format="channels_last")
        with torch.inference_mode():
            seq = kosmos2.model.generate(**inputs, max_new_tokens=60)[0]
            mask = torch.zeros(len(seq), dtype=torch.bool)
            mask[: inputs["image_embeds_position_mask"].shape[1]] = inputs["image_embeds_position_mask"][0]
            logits = kosmos2.model(
                pixel_values=inputs["pixel_values"], input_ids=seq[None], image_embeds_position_mask=mask[None]
            ).logits[0]
        first = inputs["input_ids"].shape[1]
        text = processor.batch_decode(seq[None], skip_special_tokens=True)[0]
        _, entities = processor.post_process_generation(text)
        probs = next_token_probs(logits, seq, first)
        assert len(probs) == n_new
        out.append({"entities": entities, "probs": probs, "tokens": seq[first:].tolist()})
    return out


def test_forced_answer_equals_the_processors_parse_mapped_by_hand_with_token_scores(
    kosmos2: Kosmos2, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, owner = answer_ids(kosmos2, *(text for _, text in PIECES))
    force(monkeypatch, kosmos2.model, lambda: ids)
    got = kosmos2(list(IMAGES), query())
    refs = reference(kosmos2, IMAGES, DESCRIBE_PROMPT, len(ids))
    names = [name for name, _ in PIECES]
    for image, det, ref in zip(IMAGES, got, refs, strict=True):
        assert [e[0] for e in ref["entities"]] == ["a cat", "dogs", "a tree", "<patch_index_10><patch_index_20>"]
        height, width = image.shape[:2]
        x0, y0, x1, y1 = frame_by_hand(width, height)
        expected = [
            np.asarray(box) * [x1 - x0, y1 - y0, x1 - x0, y1 - y0] + [x0, y0, x0, y0]
            for _, _, boxes in ref["entities"][:2]
            for box in boxes
        ]
        np.testing.assert_allclose(det.xyxy, np.asarray(expected), atol=1e-4)
        assert det.class_id.tolist() == [0, 1, 1]  # "a cat" -> cat, "dogs" -> dog twice; "a tree" names no prompt
        assert det.data[CLASS_NAME_DATA_FIELD].tolist() == ["cat", "dog", "dog"]

        def mean_of(*pieces: str, probs: list[float] = ref["probs"]) -> float:  # mean over these pieces' tokens
            picked = [p for p, o in zip(probs, owner, strict=True) if o >= 0 and names[o] in pieces]
            return float(np.mean(picked))

        scores = [
            mean_of("cat phrase", "cat box"),
            mean_of("dog phrase", "dog box 1"),
            mean_of("dog phrase", "dog box 2"),
        ]
        np.testing.assert_allclose(det.confidence, scores, rtol=1e-4)
        assert len(set(np.round(det.confidence, 7))) == 3  # real per-box scores, not a constant


def test_the_tiny_models_own_generations_parse_like_the_processor(kosmos2: Kosmos2) -> None:
    """Unforced: the same tokens as generating by hand, and every entity the processor finds is accounted for."""
    q = query(score_threshold=-1.0)
    raw = kosmos2.forward(kosmos2.preprocess(list(IMAGES), q))
    refs = reference(kosmos2, IMAGES, DESCRIBE_PROMPT, len(raw[0][0].ids))
    for answer, ref, image in zip(raw[0], refs, IMAGES, strict=True):
        assert answer.ids == ref["tokens"]
        np.testing.assert_allclose(answer.probs, ref["probs"], rtol=1e-4)
        regions = kosmos2.regions(answer, image)
        assert [r[0] for r in regions] == [e[0] for e in ref["entities"] for _ in e[2]]


def test_per_prompt_grounds_each_prompt_and_scores_only_generated_tokens(
    kosmos2: Kosmos2, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, owner = answer_ids(kosmos2, "<object>", "<patch_index_0000><patch_index_1023>", "</object>")
    force(monkeypatch, kosmos2.model, lambda: ids)
    (det,) = kosmos2([IMAGES[0]], query(mode="per_prompt"))
    assert det.class_id.tolist() == [0, 1, 2]  # each prompt is its own phrase
    x0, y0, x1, y1 = frame_by_hand(80, 48)
    for index, prompt in enumerate(PROMPTS):
        (ref,) = reference(kosmos2, IMAGES[:1], f"<grounding><phrase> {prompt}</phrase>", len(ids))
        ((name, _, (box,)),) = ref["entities"]
        assert name == prompt
        expected = np.asarray(box) * [x1 - x0, y1 - y0, x1 - x0, y1 - y0] + [x0, y0, x0, y0]
        np.testing.assert_allclose(det.xyxy[index], expected, atol=1e-4)
        # The phrase is the prompt's, not generated: only <object> and the box's tokens are scored.
        picked = [p for p, o in zip(ref["probs"], owner, strict=True) if o in (0, 1)]
        np.testing.assert_allclose(det.confidence[index], np.mean(picked), rtol=1e-4)


def test_threshold_and_broken_markup_give_no_regions(kosmos2: Kosmos2, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, _ = answer_ids(kosmos2, *(text for _, text in PIECES))
    force(monkeypatch, kosmos2.model, lambda: ids)
    (det,) = kosmos2([IMAGES[0]], query(score_threshold=0.99))
    assert len(det) == 0
    broken, _ = answer_ids(kosmos2, "<phrase> a cat</phrase><object><patch_index_0044></object>")
    force(monkeypatch, kosmos2.model, lambda: broken)
    (det,) = kosmos2([IMAGES[0]], query())
    assert len(det) == 0 and det.xyxy.shape == (0, 4)


@pytest.mark.parametrize("shape", [(1, 37), (31, 3)])
def test_thin_images_map_boxes_inside_them(
    kosmos2: Kosmos2, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    ids, _ = answer_ids(kosmos2, "<phrase> a cat</phrase><object><patch_index_0000><patch_index_1023></object>")
    force(monkeypatch, kosmos2.model, lambda: ids)
    height, width = shape
    (det,) = kosmos2([image_array(width, height, seed=3)], query())
    x0, y0, x1, y1 = frame_by_hand(width, height)
    # patch 0 to patch 1023 spans the model's view from its first cell's centre to its last cell's centre.
    expected = [x0 + (x1 - x0) / 64, y0 + (y1 - y0) / 64, x0 + (x1 - x0) * 63 / 64, y0 + (y1 - y0) * 63 / 64]
    np.testing.assert_allclose(det.xyxy, [expected], atol=1e-4)
