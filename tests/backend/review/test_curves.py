"""Score histograms and F1-vs-threshold curves on a constructed case, every point counted by hand."""

from __future__ import annotations

import re
from typing import Any

import pytest

from backend.learning.events import Annotation
from backend.learning.overlay import learned_plan
from backend.learning.versions import ControlState, LearnedState
from backend.plan import build_plan
from backend.review.fetch import Pair, Skipped
from backend.review.figures import PAD, PLOT_H, PLOT_W
from backend.review.metrics import review_report
from backend.review.render import report_html
from backend.review.thresholds import project_thresholds
from tests.backend.review.test_report import box
from tests.helpers import RECT_CONFIG

# Two tasks, four predicted Cars: 0.9 kept, 0.8 deleted (task 1); 0.6 kept, 0.3 deleted (task 2); and the annotator
# drew one Car per task the model missed: 4 annotated, 2 of them matched.
PAIRS = [
    Pair(Annotation(id=1, task_id=1, task_data={}, result=(box("Car", 0, 0, 10, 10), box("Car", 80, 80, 10, 10)),
                    completed_by=1), "ann", (box("Car", 0, 0, 10, 10, 0.9), box("Car", 50, 50, 10, 10, 0.8)), "v1"),
    Pair(Annotation(id=2, task_id=2, task_data={}, result=(box("Car", 0, 0, 10, 10), box("Car", 60, 60, 10, 10)),
                    completed_by=1), "ann", (box("Car", 0, 0, 10, 10, 0.6), box("Car", 30, 30, 10, 10, 0.3)), "v1"),
]  # fmt: skip


def report(thresholds: dict | None = None) -> dict[str, Any]:
    return review_report(PAIRS, Skipped(), project=1, version="v1", link=str, thresholds=thresholds)


def test_f1_at_each_threshold_equals_a_hand_count() -> None:
    (curve,) = report({("label", "Car"): {"threshold": 0.3, "source": "configured"}})["threshold_curves"]
    assert (curve["control"], curve["label"]) == ("label", "Car")
    assert curve["thresholds"] == [i / 20 for i in range(21)]
    # t <= 0.3: all 4 kept, 2 TP -> P 1/2, R 2/4, F1 2*2/(4+4); 0.3 < t <= 0.6: 3 kept, 2 TP -> F1 4/7;
    # 0.6 < t <= 0.8: 2 kept, 1 TP -> F1 2/6; 0.8 < t <= 0.9: 1 kept, 1 TP -> P 1, F1 2/5; t > 0.9: none kept.
    expected = [(0.5, 0.5, 0.5)] * 7 + [(2 / 3, 0.5, 4 / 7)] * 6 + [(0.5, 0.25, 1 / 3)] * 4
    expected += [(1.0, 0.25, 0.4)] * 2 + [(None, 0.0, 0.0)] * 2
    got = list(zip(curve["precision"], curve["recall"], curve["f1"], strict=True))
    assert got == [tuple(v if v is None else pytest.approx(v, abs=1e-4) for v in row) for row in expected]
    assert curve["best"] == 0.6  # F1 4/7 from 0.35 to 0.6: the highest of the tied thresholds
    assert (curve["project_threshold"], curve["threshold_source"]) == (0.3, "configured")


def test_histogram_counts_accepted_and_corrected_objects_per_bin() -> None:
    histogram = report()["score_histogram"]
    assert histogram["edges"] == [i / 10 for i in range(11)]
    assert histogram["accepted"] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 1]  # 0.6 and 0.9 kept
    assert histogram["corrected"] == [0, 0, 0, 1, 0, 0, 0, 0, 1, 0]  # 0.3 and 0.8 deleted


def test_choices_have_no_curve_and_an_unscored_report_draws_none() -> None:
    choice = {"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": ["Red"]}, "score": 0.7}
    pair = Pair(Annotation(id=1, task_id=1, task_data={}, result=(choice,), completed_by=1), "ann", (choice,), "v1")
    only_choices = review_report([pair], Skipped(), project=1, version="v1", link=str)
    assert only_choices["threshold_curves"] == [] and sum(only_choices["score_histogram"]["accepted"]) == 0
    assert "<figure" not in report_html(only_choices)


def test_the_page_draws_the_histogram_and_marks_the_threshold() -> None:
    page = report_html(report({("label", "Car"): {"threshold": 0.45, "source": "calibrated"}}))
    x = PAD + 0.45 * PLOT_W
    assert f"<line class='threshold' x1='{x:.1f}' y1='{PAD:.1f}' x2='{x:.1f}'" in page
    assert "calibrated 0.45" in page
    # the F1 line passes through (0.6, 4/7) and (1, 0)
    f1 = re.search(r"<polyline class='f1' points='([^']*)'", page).group(1).split()
    assert (
        f"{PAD + 0.6 * PLOT_W:.1f},{PAD + (1 - 0.5714) * PLOT_H:.1f}" in f1
        and f1[-1] == f"{PAD + PLOT_W:.1f},{PAD + PLOT_H:.1f}"
    )
    # the fullest bin holds 1 object: each of the four bars is the full height
    bars = re.findall(r"<rect class='(accepted|corrected)' x='[^']*' y='[^']*' width='[^']*' height='([^']*)'", page)
    assert sorted(float(h) for _, h in bars if float(h) > 0) == [PLOT_H] * 4
    assert "<script" not in page


def test_the_project_threshold_is_the_calibrated_one_where_a_learned_version_has_it() -> None:
    base = build_plan(RECT_CONFIG, {"detection": {"score_threshold": 0.25}}, {}, device="cpu", dtype="auto")
    assert project_thresholds(base, base) == {
        ("label", "Cat"): {"threshold": 0.25, "source": "configured"},
        ("label", "Remote"): {"threshold": 0.25, "source": "configured"},
    }
    state = LearnedState({"label": ControlState("label", thresholds={"Cat": 0.42})}, {})
    served = learned_plan(base, state, "v1-fit1")
    assert project_thresholds(base, served) == {
        ("label", "Cat"): {"threshold": 0.42, "source": "calibrated"},
        ("label", "Remote"): {"threshold": 0.25, "source": "configured"},
    }
