from __future__ import annotations

import math

import numpy as np
import pytest

from model_adapters.generative import match_prompt, span_score, token_spans

PROMPTS = ("Car", "traffic light", "person", "bus")


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("Car", 0),  # exact
        ("cars", 0),  # normalised: case and plural
        ("the Traffic-Lights.", 1),  # article, punctuation, plural
        ("a red car", 0),  # the head: the prompt ends the phrase
        ("two people", None),  # no rule turns people into person: dropped, never invented
        ("buses", 3),
        ("busy street", None),
        ("", None),
    ],
)
def test_phrases_match_prompts_exact_then_normalised_then_by_head(phrase: str, expected: int | None) -> None:
    assert match_prompt(phrase, PROMPTS) == expected


def test_the_longest_prompt_ending_a_phrase_wins() -> None:
    assert match_prompt("a green traffic light", ("light", "traffic light")) == 1


def test_token_spans_tile_the_text_and_scores_are_the_mean_of_overlapping_generated_tokens() -> None:
    pieces = {1: "<p>", 2: " red", 3: " car", 4: "</p>"}
    text, spans = token_spans(lambda ids: "".join(pieces[i] for i in ids), [2, 3, 4], prefix=[1])
    assert text == "<p> red car</p>" and spans == [(3, 7), (7, 11), (11, 15)]
    probs = np.asarray([0.2, 0.4, 0.9])
    assert span_score(spans, probs, [(3, 11)]) == pytest.approx(0.3)
    assert span_score(spans, probs, [(0, 3), (14, 15)]) == pytest.approx(0.9)  # the prompt's tokens have none
    assert math.isnan(span_score(spans, probs, [(0, 3)]))
