from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from model_adapters.base import ModelSpec, Query, make_params
from model_adapters.florence2 import TASK_TOKENS, Florence2
from tests.helpers import image_array
from tests.model_adapters.forced import force, next_token_probs

PROMPTS = ("cat", "dog", "remote")
IMAGES = (image_array(80, 48, seed=1), image_array(30, 50, seed=2))  # odd sizes, landscape and portrait
# The forced answer in pieces, so each box's tokens are known by construction.
PIECES = (
    ("start", "<s>"),  # deleted by the parsers before reading: part of no box
    ("cat phrase", "a cat"),
    ("cat box", "<loc_10><loc_20><loc_500><loc_700>"),
    ("dog phrase", "dogs"),
    ("dog box 1", "<loc_0><loc_0><loc_999><loc_999>"),
    ("dog box 2", "<loc_100><loc_200><loc_300><loc_400>"),
    ("rest", "tree<loc_1><loc_2><loc_3><loc_4></s>"),
)


@pytest.fixture(scope="module")
def florence2(tiny: Callable[[str], Path]) -> Florence2:
    adapter = Florence2(ModelSpec("florence2", str(tiny("florence2")), device="cpu"))
    adapter.load()
    return adapter


def query(**params: object) -> Query:
    return Query(PROMPTS, make_params(Florence2.Params, {"max_new_tokens": 40, **params}, owner="florence2"))


def answer_ids(florence2: Florence2) -> tuple[list[int], list[int]]:
    tokenizer = florence2.processor.tokenizer
    ids, owner = [], []
    for i, (_, text) in enumerate(PIECES):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        owner += [i] * len(piece)
    return ids, owner


def reference(florence2: Florence2, image: np.ndarray, question: str, task: str) -> dict:
    """By hand: generate, batch_decode, post_process_generation on the original size; token probabilities from
    one teacher-forced decoder pass."""
    processor = AutoProcessor.from_pretrained(florence2.spec.model_id)
    inputs = processor(images=image, text=question, return_tensors="pt", input_data_format="channels_last")
    with torch.inference_mode():
        seq = florence2.model.generate(**inputs, max_new_tokens=40)[0]
        logits = florence2.model(**inputs, decoder_input_ids=seq[None, :-1]).logits[0]
    text = processor.batch_decode(seq[None], skip_special_tokens=False)[0]
    parsed = processor.post_process_generation(text=text, task=task, image_size=(image.shape[1], image.shape[0]))
    return {"parsed": parsed[task], "probs": next_token_probs(logits, seq, 1)}


@pytest.mark.parametrize("task", ["phrase_grounding", "od", "open_vocabulary"])
def test_forced_answer_equals_the_processors_parse_with_token_scores(
    florence2: Florence2, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    ids, owner = answer_ids(florence2)
    force(monkeypatch, florence2.model, lambda: ids)
    got = florence2(list(IMAGES), query(task=task))
    question = {"phrase_grounding": TASK_TOKENS[task] + "cat. dog. remote.", "od": TASK_TOKENS[task]}
    names = [name for name, _ in PIECES]
    for image, det in zip(IMAGES, got, strict=True):
        ref = reference(florence2, image, question.get(task, TASK_TOKENS[task] + "cat"), TASK_TOKENS[task])
        labels = ref["parsed"].get("labels", ref["parsed"].get("bboxes_labels"))
        assert labels == ["a cat", "dogs", "dogs", "tree"]
        per_prompt = 3 if task == "open_vocabulary" else 1  # one question per prompt, the same forced answer
        expected = np.tile(np.asarray(ref["parsed"]["bboxes"][:3]), (per_prompt, 1))  # in pixels already
        np.testing.assert_allclose(det.xyxy, expected, atol=1e-4)
        assert det.class_id.tolist() == [0, 1, 1] * per_prompt

        def mean_of(*pieces: str, probs: list[float] = ref["probs"]) -> float:
            return float(np.mean([p for p, o in zip(probs, owner, strict=True) if names[o] in pieces]))

        scores = [
            mean_of("cat phrase", "cat box"),
            mean_of("dog phrase", "dog box 1"),
            mean_of("dog phrase", "dog box 2"),
        ]
        if task != "open_vocabulary":  # the questions differ, so do the probabilities
            np.testing.assert_allclose(det.confidence, scores, rtol=1e-4)
        else:
            np.testing.assert_allclose(det.confidence[:3], scores, rtol=1e-4)


def test_nothing_generated_is_empty(florence2: Florence2) -> None:
    (det,) = florence2([IMAGES[0]], query())
    assert det.xyxy.shape == (0, 4)
