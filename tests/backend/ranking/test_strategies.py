"""Each strategy's certainties and task scores on constructed evidence, computed by hand; orderings checked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.errors import ProjectSettingsError
from backend.ranking.evidence import BoxEvidence, ChoiceEvidence
from backend.ranking.settings import STRATEGIES, ranking_settings
from backend.ranking.strategies import agreement, boosted, label_counts, rank_score


def boxes(scores: list[float], threshold: float = 0.3, members: list[int] | None = None, ensemble: int = 0):
    return BoxEvidence(
        np.asarray(scores), np.full(len(scores), threshold), None if members is None else np.asarray(members), ensemble
    )


def choice(scores: list[float], multiple: bool = False, threshold: float = 0.5) -> ChoiceEvidence:
    return ChoiceEvidence(np.asarray(scores), np.full(len(scores), threshold), multiple)


def region(score: float, label: str = "Car", control: str = "label") -> dict:
    return {"from_name": control, "type": "rectanglelabels", "score": score,
            "original_width": 100, "original_height": 100,
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": [label]}}  # fmt: skip


def test_box_scores_by_hand() -> None:
    evidence = [boxes([0.9, 0.4])]
    regions = [region(0.9), region(0.4)]
    assert rank_score("confidence", evidence, regions) == pytest.approx(0.65)
    assert rank_score("least_confidence", evidence, regions) == pytest.approx(0.4)
    assert rank_score("margin", evidence, regions) == pytest.approx((0.4 - 0.3) / 0.7)
    assert rank_score("close_to_threshold", evidence, regions) == pytest.approx(0.1 / 0.7)
    h = lambda p: -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # noqa: E731
    assert rank_score("entropy", evidence, regions) == pytest.approx(1 - (h(0.9) + h(0.4)) / 2)
    # disagreement without an ensemble: least_confidence
    assert rank_score("disagreement", evidence, regions) == pytest.approx(0.4)


def test_single_choice_scores_by_hand() -> None:
    evidence = [choice([0.5, 0.3, 0.2])]
    regions = [{"from_name": "c", "type": "choices", "score": 0.5, "value": {"choices": ["A"]}}]
    assert rank_score("least_confidence", evidence, regions) == pytest.approx(0.5)
    assert rank_score("margin", evidence, regions) == pytest.approx(0.2)
    assert rank_score("close_to_threshold", evidence, regions) == pytest.approx(0.2)
    entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert rank_score("entropy", evidence, regions) == pytest.approx(1 - entropy / math.log(3))
    # sigmoid scores of a single choice are scaled to sum 1 first: (0.9, 0.3) -> (0.75, 0.25)
    assert rank_score("margin", [choice([0.9, 0.3])], regions) == pytest.approx(0.5)


def test_multiple_choice_scores_by_hand() -> None:
    evidence = [choice([0.9, 0.45, 0.1], multiple=True, threshold=0.4)]
    assert rank_score("least_confidence", evidence, []) == pytest.approx(0.55)
    assert rank_score("margin", evidence, []) == pytest.approx(0.1)  # |2 x 0.45 - 1|
    assert rank_score("close_to_threshold", evidence, []) == pytest.approx(0.05 / 0.6)


def test_ensemble_disagreement_is_the_mean_share_of_members_that_found_each_box() -> None:
    assert rank_score("disagreement", [boxes([0.8, 0.3, 0.3], members=[3, 1, 2], ensemble=3)], []) == pytest.approx(
        (1 + 1 / 3 + 2 / 3) / 3
    )
    assert rank_score("disagreement", [boxes([], ensemble=2)], []) == 1.0  # no member found anything: agreement


def test_nothing_predicted_comes_first() -> None:
    for strategy in STRATEGIES:
        assert rank_score(strategy, [boxes([])], []) == 0.0


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        ("least_confidence", ["flat", "close", "sure"]),  # top probability 0.3 < 0.4 < 0.95
        ("margin", ["close", "flat", "sure"]),  # top two apart 0.05 < 0.2 < 0.9
        ("entropy", ["close", "flat", "sure"]),  # 1 - H/ln L: 0.017 (close) < 0.051 (flat) < 0.71
    ],
)
def test_each_strategy_puts_the_task_an_annotator_should_see_first(strategy: str, order: list[str]) -> None:
    tasks = {
        "sure": [choice([0.95, 0.05])],
        "close": [choice([0.4, 0.35, 0.25])],  # two labels neck and neck
        "flat": [choice([0.3] + [0.1] * 7)],  # a weak favourite among eight
    }
    assert sorted(tasks, key=lambda name: rank_score(strategy, tasks[name], [])) == order


def test_agreement_of_two_predictions() -> None:
    car, person = region(0.9, "Car"), region(0.8, "Person")
    moved = {**car, "value": {**car["value"], "x": 25}}  # IoU (5 x 20) / (35 x 20) = 0.14: no match
    assert agreement([car, person], [car, person]) == 1.0
    assert agreement([car, person], [car]) == pytest.approx(2 / 3)
    assert agreement([car], [moved]) == 0.0
    assert agreement([], []) == 1.0
    red = {"from_name": "c", "type": "choices", "score": 0.9, "value": {"choices": ["Red"]}}
    blue = {**red, "value": {"choices": ["Blue"]}}
    assert agreement([red, car], [blue, car]) == pytest.approx(0.5)


def test_rare_boost_by_hand() -> None:
    counts = label_counts([[region(1, "Car")] * 4, [region(1, "Car"), region(1, "Person")]])
    assert counts == {("label", "Car"): 5, ("label", "Person"): 1}
    labels = {"label": ("Car", "Person", "Bus")}
    # Person: rarity 1 - 1/5 = 0.8, region score 0.5 -> 0.4; Car: 0 -> task rarity 0.4; boost 0.5: x (1 - 0.2)
    assert boosted(0.6, [region(0.9, "Car"), region(0.5, "Person")], counts, labels, 0.5) == pytest.approx(0.48)
    assert boosted(0.6, [region(0.5, "Bus")], counts, labels, 1.0) == pytest.approx(0.3)  # never annotated: 1
    assert boosted(0.6, [region(0.5, "Bus")], {}, labels, 1.0) == 0.6  # no annotations: no boost
    assert boosted(0.6, [region(0.5, "Bus")], counts, labels, 0.0) == 0.6


def test_settings_are_checked() -> None:
    assert ranking_settings({}).strategy == "confidence"
    assert ranking_settings({"active_learning": {"strategy": "margin", "rare_boost": 1}}).rare_boost == 1.0
    for bad in ({"strategy": "random"}, {"rare_boost": 2}, {"speed": 1}):
        with pytest.raises(ProjectSettingsError, match="active_learning"):
            ranking_settings({"active_learning": bad})
