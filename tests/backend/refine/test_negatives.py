"""Negative prompts: a label's box that a negative's box overlaps (for that label) is dropped; hand-built outputs."""

from __future__ import annotations

import pytest

from backend.detection import labelled
from backend.errors import ProjectSettingsError
from backend.plan import TargetPlan, build_plan
from tests.helpers import make_detections

CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Person"/></RectangleLabels>
</View>"""


def target(**settings: object) -> TargetPlan:
    project = {"negatives": {"Car": ["toy car"], "*": ["poster"]}, **settings}
    return build_plan(CONFIG, project, {}, device="cpu", dtype="auto").targets[0]


def test_negatives_follow_the_labels_prompts_and_are_asked_once() -> None:
    plan = target(controls={"label": {"negatives": {"Person": ["poster"]}}})
    # "poster" is named for every label and (by the control) for Person: one prompt that vetoes both labels
    assert plan.prompts == ("Car", "Person", "poster", "toy car") and plan.prompt_labels == (0, 1, -1, -1)
    assert plan.negatives.first == 2 and plan.negatives.scopes == ((0, 1), (0,))


def boxes(plan: TargetPlan, rows: list[tuple[str, list[float]]]):
    """Detections whose class ids are the prompt ids of the named prompts, score 0.9 down."""
    ids = [plan.prompts.index(prompt) for prompt, _ in rows]
    return make_detections([box for _, box in rows], [0.9 - 0.01 * i for i in range(len(rows))], ids)


def test_a_labels_box_overlapping_a_negative_for_it_is_dropped_and_negative_boxes_never_show() -> None:
    plan = target()
    found = boxes(plan, [
        ("Car", [0, 0, 10, 10]), ("toy car", [1, 0, 11, 10]),  # IoU 90/110 = 0.82: the car is a toy
        ("Person", [1, 0, 11, 10]),  # the same place, but "toy car" does not veto people
        ("Car", [50, 50, 60, 60]), ("poster", [52, 50, 62, 60]),  # IoU 80/120 = 0.67, "*": vetoes a car...
        ("Person", [200, 0, 210, 10]), ("poster", [200, 0, 210, 10]),  # ...and a person
        ("Car", [100, 100, 110, 110]), ("toy car", [105, 100, 115, 110]),  # IoU 50/150 = 0.33: both kept
    ])  # fmt: skip
    out = labelled(found, plan, (640, 480))
    assert sorted(zip(out.data["class_name"].tolist(), out.xyxy.tolist(), strict=True)) == [
        ("Car", [100, 100, 110, 110]), ("Person", [1, 0, 11, 10])]  # fmt: skip


def test_the_overlap_is_a_setting() -> None:
    plan = target(detection={"negative_iou": 0.3})
    found = boxes(plan, [("Car", [100, 100, 110, 110]), ("toy car", [105, 100, 115, 110])])
    assert len(labelled(found, plan, (640, 480))) == 0  # 0.33 > 0.3


def test_without_negative_boxes_nothing_is_vetoed() -> None:
    plan = target()
    found = boxes(plan, [("Car", [0, 0, 10, 10]), ("Person", [0, 0, 10, 10])])
    assert len(labelled(found, plan, (640, 480))) == 2


@pytest.mark.parametrize(
    ("negatives", "message"),
    [({"Bus": ["toy bus"]}, "'Bus' is not a label"), ({"Car": [1]}, "negatives.Car must be a list of strings"),
     ({"*": []}, "negatives.* must name at least one prompt")],
)  # fmt: skip
def test_bad_negatives_are_named(negatives: dict, message: str) -> None:
    with pytest.raises(ProjectSettingsError, match=message.replace("*", r"\*")):
        build_plan(CONFIG, {"negatives": negatives}, {}, device="cpu", dtype="auto")
