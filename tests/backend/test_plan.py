from __future__ import annotations

import dataclasses
import subprocess
import sys
from contextlib import nullcontext as does_not_raise
from typing import Any

import pytest

from backend.errors import ProjectSettingsError
from backend.plan import build_plan, check_server_defaults, parse_extra_params
from tests.helpers import RECT_CONFIG

THRESHOLD_CONFIG = RECT_CONFIG.replace('toName="image">', 'toName="image" model_score_threshold="0.15">')
TWO = """<View><Image name="image" value="$image"/>
<RectangleLabels name="a" toName="image"><Label value="Cat"/></RectangleLabels>
<RectangleLabels name="b" toName="image"><Label value="Dog"/></RectangleLabels>
<BrushLabels name="c" toName="image"><Label value="Dog"/></BrushLabels></View>"""


def plan(config: str = RECT_CONFIG, project: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None):
    return build_plan(config, project or {}, defaults or {}, device="cpu", dtype="auto")


def test_defaults_give_grounding_dino_with_label_prompts() -> None:
    (target,) = plan().targets
    assert target.spec.adapter == "grounding_dino"
    assert target.spec.model_id == "IDEA-Research/grounding-dino-tiny"
    assert target.prompts == ("a cat", "cat", "Remote")
    assert target.prompt_labels == (0, 0, 1)
    assert target.params.score_threshold == 0.3


def test_settings_precedence_project_over_control_over_env() -> None:
    env = {"detection": {"score_threshold": 0.5, "text_threshold": 0.4}}
    assert plan(THRESHOLD_CONFIG, defaults=env).targets[0].params.score_threshold == 0.15  # control attr > env
    assert plan(THRESHOLD_CONFIG, defaults=env).targets[0].params.text_threshold == 0.4  # env applies
    project = {"detection": {"score_threshold": 0.6}}
    assert plan(THRESHOLD_CONFIG, project, env).targets[0].params.score_threshold == 0.6  # project > control
    per_control = {"detection": {"score_threshold": 0.6}, "controls": {"label": {"score_threshold": 0.7}}}
    assert plan(THRESHOLD_CONFIG, per_control, env).targets[0].params.score_threshold == 0.7


def test_env_knobs_of_another_model_do_not_break_a_project_that_picks_a_variant() -> None:
    env = {"detection": {"text_threshold": 0.4, "nms_threshold": 0.3}}
    (target,) = plan(project={"detection": {"model": "grounding_dino.base"}}, defaults=env).targets
    assert target.spec.model_id == "IDEA-Research/grounding-dino-base"
    assert target.post.nms_threshold == 0.3


def test_prompts_from_extra_params_replace_predicted_values() -> None:
    project = {"prompts": {"Cat": ["kitten", "cat"], "Remote": "remote control, tv remote"}}
    (target,) = plan(project=project).targets
    assert target.prompts == ("kitten", "cat", "remote control", "tv remote")
    assert target.prompt_labels == (0, 0, 1, 1)
    control = {"prompts": {"Cat": ["kitten"]}, "controls": {"label": {"prompts": {"Cat": ["feline"]}}}}
    assert plan(project=control).targets[0].prompts[0] == "feline"


def test_several_controls_each_get_their_model_and_segmentation_gets_a_detector() -> None:
    result = plan(TWO, {"controls": {"b": {"model": "grounding_dino.base"}}})
    assert [t.target.control for t in result.targets] == ["a", "b", "c"]
    assert result.targets[1].spec.model_id.endswith("grounding-dino-base")
    brush = result.targets[2]
    assert brush.spec.adapter == "sam" and brush.detector is not None
    assert brush.detector.spec.adapter == "grounding_dino" and brush.detector.prompts == ("Dog",)
    assert result.targets[0].detector is None


@pytest.mark.parametrize(
    ("project", "expectation"),
    [
        ({}, does_not_raise()),
        ({"detection": {"bogus": 1}}, pytest.raises(ProjectSettingsError, match="unknown setting 'bogus'")),
        ({"detection": {"score_threshold": "high"}}, pytest.raises(ProjectSettingsError, match="must be a number")),
        ({"detection": {"prompt_mode": "each"}}, pytest.raises(ProjectSettingsError, match="must be one of")),
        ({"detection": {"model": "yolo"}}, pytest.raises(ProjectSettingsError, match="unknown model 'yolo'")),
        (
            {"detection": {"model": "grounding_dino.huge"}},
            pytest.raises(ProjectSettingsError, match="grounding_dino.tiny"),
        ),
        ({"detection": {"device": "tpu"}}, pytest.raises(ProjectSettingsError, match="device must be")),
        ({"detection": {"dtype": "int8"}}, pytest.raises(ProjectSettingsError, match="dtype must be")),
        ({"detection": {"class_agnostic_nms": "yes"}}, pytest.raises(ProjectSettingsError, match="true or false")),
        ({"controls": {"nope": {}}}, pytest.raises(ProjectSettingsError, match="no image control named 'nope'")),
        ({"prompts": {"Dog": ["dog"]}}, pytest.raises(ProjectSettingsError, match="'Dog' is not a label")),
        ({"prompts": {"Cat": []}}, pytest.raises(ProjectSettingsError, match="at least one prompt")),
        ({"prompts": {"Cat": [1]}}, pytest.raises(ProjectSettingsError, match="list of strings")),
    ],
)
def test_project_settings_are_checked(project: dict[str, Any], expectation: Any) -> None:
    with expectation:
        plan(project=project)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, {}), ("", {}), ('{"detection": {"model": "grounding_dino"}}', {"detection": {"model": "grounding_dino"}}),
     ({"prompts": {"Cat": "cat"}}, {"prompts": {"Cat": "cat"}})],
)  # fmt: skip
def test_extra_params_accepts_null_string_and_object(raw: Any, expected: dict[str, Any]) -> None:
    assert parse_extra_params(raw) == expected


@pytest.mark.parametrize(
    ("raw", "match"),
    [("{not json", "must be a JSON object"), ("[1, 2]", "must be a JSON object"),
     ({"model": "owlv2"}, "model settings go under a task section"), ({"detection": 3}, "must be a JSON object")],
)  # fmt: skip
def test_extra_params_errors_say_what_is_wrong(raw: Any, match: str) -> None:
    with pytest.raises(ProjectSettingsError, match=match):
        parse_extra_params(raw)


def test_model_version_is_stable_and_changes_with_what_changes_predictions() -> None:
    base = plan().model_version
    assert base.startswith("grounding_dino-")
    assert plan().model_version == base
    assert build_plan(RECT_CONFIG, {}, {}, device="cuda", dtype="float16").model_version == base  # placement only
    assert plan(project={"detection": {"score_threshold": 0.31}}).model_version != base
    assert plan(project={"prompts": {"Cat": ["kitten"]}}).model_version != base
    assert plan(RECT_CONFIG.replace("Remote", "Phone")).model_version != base


def test_model_version_is_identical_in_a_fresh_process() -> None:
    code = (
        "from backend.plan import build_plan; from tests.helpers import RECT_CONFIG; "
        "print(build_plan(RECT_CONFIG, {}, {}, device='cpu', dtype='auto').model_version)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == plan().model_version


def test_server_defaults_are_checked_at_startup() -> None:
    check_server_defaults({"detection": {"model": "grounding_dino.base", "score_threshold": 0.2}})
    with pytest.raises(ProjectSettingsError, match="PRELABEL_DEFAULTS.detection: unknown setting 'typo'"):
        check_server_defaults({"detection": {"typo": 1}})
    with pytest.raises(ProjectSettingsError, match="PRELABEL_DEFAULTS: unknown key 'model'"):
        check_server_defaults({"model": "owlv2"})


EXAMPLE = {"image": "/data/upload/1/cat.jpg", "x": 10, "y": 20, "width": 30, "height": 40}


def test_example_boxes_become_visual_prompts_after_the_texts() -> None:
    project = {"detection": {"model": "owlv2"}, "examples": {"Cat": [EXAMPLE, {**EXAMPLE, "x": 50}]}}
    (target,) = plan(project=project).targets
    assert target.prompts == ("a cat", "cat", "Remote")
    assert [(e.label, e.image, e.rect) for e in target.examples] == [
        (0, "/data/upload/1/cat.jpg", (10.0, 20.0, 30.0, 40.0)), (0, "/data/upload/1/cat.jpg", (50.0, 20.0, 30.0, 40.0)),
    ]  # fmt: skip
    assert target.prompt_labels == (0, 0, 1, 0, 0)
    assert plan(project=project).model_version != plan(project={"detection": {"model": "owlv2"}}).model_version


@pytest.mark.parametrize(
    ("project", "match"),
    [
        (
            {"examples": {"Cat": [EXAMPLE]}},
            "'grounding_dino' does not take example boxes; models that do: owlvit, owlv2",
        ),
        ({"detection": {"model": "owlv2"}, "examples": {"Cat": EXAMPLE}}, "must be a list"),
        ({"detection": {"model": "owlv2"}, "examples": {"Cat": [{"image": "x"}]}}, "each example must look like"),
        ({"detection": {"model": "owlv2"}, "examples": {"Cat": [{**EXAMPLE, "width": 95}]}}, "inside the image"),
        ({"detection": {"model": "owlv2"}, "examples": {"Dog": [EXAMPLE]}}, "'Dog' is not a label"),
    ],
)
def test_example_settings_are_checked(project: dict[str, Any], match: str) -> None:
    with pytest.raises(ProjectSettingsError, match=match):
        plan(project=project)


@pytest.mark.parametrize(
    ("project", "match"),
    [
        ({"controls": {"label": 5}}, "controls.label must be a JSON object"),
        ({"detection": {"max_detections": float("inf")}}, "must be a number"),
        ({"detection": {"nms_threshold": float("nan")}}, "must be a number"),
        ({"detection": {"max_detections": -3}}, "max_detections must be between 1"),
        ({"detection": {"nms_threshold": 1.5}}, "nms_threshold must be between 0.0 and 1.0"),
    ],
)
def test_settings_out_of_range_or_malformed_are_refused(project: dict[str, Any], match: str) -> None:
    with pytest.raises(ProjectSettingsError, match=match):
        parse_extra_params(project)
        plan(project=project)


def test_model_version_changes_with_the_control_type_and_choice_mode() -> None:
    brush = TWO.replace("BrushLabels", "PolygonLabels")
    assert plan(TWO).model_version != plan(brush).model_version
    single = '<View><Image name="i" value="$i"/><Choices name="c" toName="i"><Choice value="A"/></Choices></View>'
    multiple = single.replace('toName="i">', 'toName="i" choice="multiple">')
    assert plan(single).model_version != plan(multiple).model_version


def test_a_text_prompted_segmenter_needs_no_detector() -> None:
    brush = plan(TWO, {"segmentation": {"model": "sam3"}}).targets[2]
    assert brush.spec.adapter == "sam3" and brush.detector is None and brush.prompts == ("Dog",)


def test_the_interactive_model_does_not_change_the_version_of_batch_predictions() -> None:
    smart = TWO.replace(
        '<RectangleLabels name="a" toName="image">', '<RectangleLabels name="a" toName="image" smart="true">'
    )
    base = plan(smart)
    assert base.interactive  # the smart control is answered by a segmenter
    other = plan(smart, {"interactive": {"model": "sam2", "mask_threshold": 0.2}})
    assert other.interactive[0].spec.adapter == "sam2"
    assert other.model_version == base.model_version
    assert plan(smart, {"segmentation": {"model": "sam2"}}).model_version != base.model_version


def test_a_choices_control_may_pick_an_embedding_only_model_which_takes_no_prompt_knobs() -> None:
    choices = '<View><Image name="i" value="$i"/><Choices name="c" toName="i"><Choice value="A"/></Choices></View>'
    env = {"classification": {"templates": ["a photo of {}"]}}  # a clip knob: it applies where it fits
    (target,) = plan(choices, {"classification": {"model": "dinov2"}}, env).targets
    assert target.spec.model_id == "facebook/dinov2-small" and dataclasses.asdict(target.params) == {}
    with pytest.raises(
        ProjectSettingsError,
        match="unknown setting 'templates' for dinov2; known: device, dtype, label_thresholds, model, model_id, prompts, score_threshold$",
    ):
        plan(choices, {"classification": {"model": "dinov2", "templates": ["{}"]}})


def test_model_id_urls_are_limited_to_published_checkpoints() -> None:
    from model_adapters.albef import Albef

    published = Albef.variants["mscoco"]
    assert (
        plan(CHOICE_CONFIG, {"classification": {"model": "albef", "model_id": published}}).targets[0].spec.model_id
        == published
    )
    with pytest.raises(ProjectSettingsError, match="is a URL that is not a published checkpoint of albef"):
        plan(
            CHOICE_CONFIG, {"classification": {"model": "albef", "model_id": "http://127.0.0.1:9/latest/meta-data.pth"}}
        )
    with pytest.raises(ProjectSettingsError, match="not a published checkpoint of grounding_dino"):
        plan(project={"detection": {"model_id": "https://example.com/weights"}})


CHOICE_CONFIG = '<View><Image name="i" value="$i"/><Choices name="c" toName="i"><Choice value="A"/></Choices></View>'
