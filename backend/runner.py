"""Tasks + plan -> one Label Studio prediction per task, in order.

The flow is one-way: fetch each task's images (in parallel, one chunk ahead of the models), send them to each
target's model in batches of the adapter's ``max_batch_size``, turn the answers into regions, and assemble one
entry per task. A task whose image fails, or whose batch fails, gets an empty result and a log line naming
it; the other tasks are still predicted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from backend import metrics
from backend.classification import choice_regions
from backend.detection import detection_regions, finish_detections
from backend.encode import task_score
from backend.errors import BadRequest, MediaError
from backend.ls_client import LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool
from backend.plan import Plan, TargetPlan
from backend.prompts import ExampleRef
from backend.segmentation import finish_masks, mask_regions
from model_adapters.base import Adapter, ExamplePrompt, Query, Task
from model_adapters.segmentation import Click, MaskPrompt

__all__ = ["Runner"]

log = logging.getLogger(__name__)

# Tasks whose images are held in memory at once (and fetched while the previous chunk is on the model).
CHUNK_TASKS = 16
# Example images (few-shot prompts from the settings) kept decoded between requests.
EXAMPLE_IMAGES_KEPT = 32


@dataclass
class _TaskState:
    index: int  # position in the request: the key for its fetched images
    task_id: int | None
    data: dict[str, Any]
    regions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Runner:
    """Predicts batches of tasks for one plan.

    Args:
        pool: Loaded models.
        fetcher: Image fetching within limits.
        executor: Threads for image fetching.
        model_wait: Seconds to wait for a model still loading.
    """

    def __init__(self, pool: ModelPool, fetcher: MediaFetcher, executor: ThreadPoolExecutor, model_wait: float):
        self.pool = pool
        self.fetcher = fetcher
        self.executor = executor
        self.model_wait = model_wait
        self._example_images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._examples_lock = threading.Lock()

    def predict(self, tasks: Sequence[Any], plan: Plan, ls: LabelStudioClient | None) -> list[dict[str, Any]]:
        """Predict every task; the answer has one ``{"result", "score", "model_version"}`` entry per task.

        Raises:
            BadRequest: A task is not an object with a ``data`` object.
            ModelUnavailable: A model the plan needs failed to load or is still loading.
        """
        states = [_task_state(task, i) for i, task in enumerate(tasks)]
        for spec in plan.batch_specs():
            self.pool.get(spec, self.model_wait)
        for chunk, images in self._prefetched(states, plan, ls):
            shared: dict[Any, dict[int, sv.Detections]] = {}
            for target in plan.targets:
                self._run_target(target, chunk, images, ls, shared)
        entries = []
        for state in states:
            if state.errors:
                log.warning("task %s: %s", state.task_id, "; ".join(state.errors))
            metrics.TASKS.labels("failed" if state.errors else "predicted").inc()
            entries.append(
                {"result": state.regions, "score": task_score(state.regions), "model_version": plan.model_version}
            )
        return entries

    def interactive(
        self, tasks: Sequence[Any], context: dict[str, Any], plan: Plan, ls: LabelStudioClient | None
    ) -> list[dict[str, Any]]:
        """Answer the annotator's smart-tool regions (clicks, boxes) on one task with a mask region.

        Keypoints are clicks (``is_positive`` false marks background); rectangles are boxes. The mask goes to the
        image's brush (else polygon) control, with the label the annotator picked. The image embedding is cached
        per task image, so the next click on the same image runs only the mask decoder.

        Raises:
            BadRequest: Not exactly one task, or the context's regions cannot be read.
            ModelUnavailable: The segmenter failed to load or is still loading.
        """
        if len(tasks) != 1:
            raise BadRequest(f"interactive requests carry one task, got {len(tasks)}")
        state = _task_state(tasks[0], 0)
        regions = context.get("result")
        if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
            raise BadRequest("params.context.result must be a list of regions")
        controls = {r.get("from_name") for r in regions}
        route = next((i for i in plan.interactive if controls & set(i.prompt_controls)), None)
        answer = {"result": [], "score": 0.0, "model_version": plan.model_version}
        if route is None:
            log.info("task %s: no smart control with a mask control to answer %s", state.task_id, sorted(controls))
            return [answer]
        label, prompt = _mask_prompt([r for r in regions if r.get("from_name") in route.prompt_controls])
        output = route.output
        if label not in output.labels:
            log.warning("task %s: label %r is not in %s; no mask", state.task_id, label, output.control)
            return [answer]
        value = state.data.get(output.value_key)
        self.pool.get(route.spec, self.model_wait)
        try:
            image = self.fetcher.load(value, task_id=state.task_id, ls=ls)
        except MediaError as exc:
            metrics.ERRORS.labels("media").inc()
            log.warning("task %s: image %r: %s", state.task_id, output.value_key, exc)
            return [answer]
        origin = ls.base_url if ls else ""
        key = f"task{state.task_id}:" + hashlib.blake2b(f"{origin}|{value}".encode(), digest_size=16).hexdigest()
        scale = _PercentToPixels(image)
        pixel_prompt = MaskPrompt(
            boxes=tuple(scale.box(b) for b in prompt.boxes), clicks=tuple(scale.click(c) for c in prompt.clicks)
        )
        try:
            masks = self.pool.call(
                route.spec, lambda adapter: adapter.segment(image, pixel_prompt, image_key=key, params=route.params), 1
            )
        except Exception as exc:
            self._failed(route.spec.adapter, [state], exc)
            return [answer]
        labelled = sv.Detections(
            xyxy=masks.xyxy,
            mask=masks.mask,
            confidence=masks.confidence,
            class_id=np.full(len(masks), output.labels.index(label)),
        )
        labelled = labelled[labelled.mask.reshape(len(labelled), -1).sum(axis=1) >= route.post.min_area]
        result = mask_regions(labelled, output, route.post, (image.shape[1], image.shape[0]))
        return [{"result": result, "score": task_score(result), "model_version": plan.model_version}]

    def _prefetched(
        self, states: list[_TaskState], plan: Plan, ls: LabelStudioClient | None
    ) -> Iterator[tuple[list[_TaskState], dict[tuple[int, str], np.ndarray]]]:
        """Yield chunks of tasks with their decoded images, fetching the next chunk meanwhile."""
        keys = sorted({t.target.value_key for t in plan.targets})
        chunks = [states[i : i + CHUNK_TASKS] for i in range(0, len(states), CHUNK_TASKS)]
        pending = [self._fetch(chunk, keys, ls) for chunk in chunks[:1]]
        for i, chunk in enumerate(chunks):
            if i + 1 < len(chunks):
                pending.append(self._fetch(chunks[i + 1], keys, ls))
            futures = pending.pop(0)
            images = {}
            for (index, key), future in futures.items():
                try:
                    images[(index, key)] = future.result()
                except MediaError as exc:
                    metrics.ERRORS.labels("media").inc()
                    states[index].errors.append(f"image {key!r}: {exc}")
            yield chunk, images

    def _fetch(
        self, chunk: list[_TaskState], keys: list[str], ls: LabelStudioClient | None
    ) -> dict[tuple[int, str], Future[np.ndarray]]:
        futures: dict[tuple[int, str], Future[np.ndarray]] = {}
        for state in chunk:
            for key in keys:
                if key not in state.data:
                    state.errors.append(f"task data has no {key!r} (the config reads ${key})")
                    continue
                futures[(state.index, key)] = self.executor.submit(
                    self.fetcher.load, state.data[key], task_id=state.task_id, ls=ls
                )
        return futures

    def _run_target(
        self,
        target: TargetPlan,
        chunk: list[_TaskState],
        images: dict[tuple[int, str], np.ndarray],
        ls: LabelStudioClient | None,
        shared: dict[Any, dict[int, sv.Detections]],
    ) -> None:
        """Regions of one control for a chunk of tasks."""
        key = target.target.value_key
        ready = [(s, images[(s.index, key)]) for s in chunk if (s.index, key) in images]
        if target.detector is not None:  # a promptable segmenter: boxes from the detector, then masks
            boxes = self._answers(target.detector, ready, ls, shared)
            for state, image in ready:
                if state.index in boxes:
                    wh = (image.shape[1], image.shape[0])
                    self._segment_boxes(
                        target, state, image, finish_detections(boxes[state.index], target.detector, wh)
                    )
            return
        answers = self._answers(target, ready, ls, shared)
        for state, image in ready:
            answer = answers.get(state.index)
            if answer is None:
                continue
            wh = (image.shape[1], image.shape[0])
            if target.target.task is Task.DETECTION:
                state.regions.extend(detection_regions(answer, target, wh))
            elif target.target.task is Task.CLASSIFICATION:
                state.regions.extend(choice_regions(answer, target))
            else:
                masks = finish_masks(answer, target, prompt_ids=True)
                state.regions.extend(mask_regions(masks, target.target, target.post, wh))

    def _answers(
        self,
        target: TargetPlan,
        ready: list[tuple[_TaskState, np.ndarray]],
        ls: LabelStudioClient | None,
        shared: dict[Any, dict[int, sv.Detections]],
    ) -> dict[int, sv.Detections]:
        """The model's raw answer per task, in batches; targets asking the same question share one pass.

        A failed batch (or example image) is recorded on its tasks, which get no answer.
        """
        key = (target.spec, repr(target.params), target.prompts, target.examples, target.target.value_key)
        if key in shared:
            return shared[key]
        answers: dict[int, sv.Detections] = shared.setdefault(key, {})
        adapter = self.pool.get(target.spec, self.model_wait)
        try:
            examples = tuple(self._example_prompt(example, ls) for example in target.examples)
        except MediaError as exc:
            metrics.ERRORS.labels("media").inc()
            for state, _ in ready:
                state.errors.append(f"example image of control {target.target.control!r}: {exc}")
            return answers
        query = Query((*target.prompts, *examples), target.params)
        for batch in _batches(ready, adapter):
            try:
                results = self.pool.run(target.spec, [image for _, image in batch], query)
            except Exception as exc:
                self._failed(target.spec.adapter, [state for state, _ in batch], exc)
                continue
            answers.update({state.index: answer for (state, _), answer in zip(batch, results, strict=True)})
        return answers

    def _segment_boxes(self, target: TargetPlan, state: _TaskState, image: np.ndarray, boxes: sv.Detections) -> None:
        """Grounded segmentation: one decoder call for all of an image's boxes; the boxes keep label and score."""
        if len(boxes) == 0:
            return
        prompt = MaskPrompt(boxes=tuple((float(a), float(b), float(c), float(d)) for a, b, c, d in boxes.xyxy))
        try:
            masks = self.pool.call(target.spec, lambda adapter: adapter.segment(image, prompt, params=target.params), 1)
        except Exception as exc:
            self._failed(target.spec.adapter, [state], exc)
            return
        labelled = sv.Detections(xyxy=masks.xyxy, mask=masks.mask, confidence=boxes.confidence, class_id=boxes.class_id)
        finished = finish_masks(labelled, target, prompt_ids=False)
        state.regions.extend(mask_regions(finished, target.target, target.post, (image.shape[1], image.shape[0])))

    @staticmethod
    def _failed(adapter: str, states: list[_TaskState], exc: Exception) -> None:
        metrics.ERRORS.labels("adapter").inc()
        log.exception("%s failed on tasks %s", adapter, [s.task_id for s in states])
        for state in states:
            state.errors.append(f"{adapter} failed on this batch: {type(exc).__name__}: {exc}")

    def _example_prompt(self, example: ExampleRef, ls: LabelStudioClient | None) -> ExamplePrompt:
        """An example box as the adapter takes it; example images are fetched once and kept (a few)."""
        source = f"{ls.base_url if ls else ''}|{example.image}"  # the same path on two Label Studios differs
        with self._examples_lock:
            image = self._example_images.get(source)
        if image is None:
            image = self.fetcher.load(example.image, task_id=None, ls=ls)
            with self._examples_lock:
                self._example_images[source] = image
                while len(self._example_images) > EXAMPLE_IMAGES_KEPT:
                    self._example_images.popitem(last=False)
        height, width = image.shape[:2]
        x, y, w, h = example.rect
        box = (x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100)
        return ExamplePrompt(image, box, key=f"{source}#{example.rect}")


def _batches(
    ready: list[tuple[_TaskState, np.ndarray]], adapter: Adapter
) -> Iterator[list[tuple[_TaskState, np.ndarray]]]:
    """Batches of at most ``max_batch_size`` images sharing the adapter's ``batch_key``, in order of first sight.

    Only images with equal keys answer in a batch as they would alone (e.g. no padding to another image's size).
    """
    groups: dict[Hashable, list[tuple[_TaskState, np.ndarray]]] = {}
    for item in ready:
        groups.setdefault(adapter.batch_key(item[1].shape), []).append(item)
    for group in groups.values():
        for start in range(0, len(group), adapter.max_batch_size):
            yield group[start : start + adapter.max_batch_size]


@dataclass(frozen=True)
class _PercentToPixels:
    """Label Studio's percent coordinates to pixels of the fetched image."""

    image: np.ndarray

    def box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        height, width = self.image.shape[:2]
        return (box[0] * width / 100, box[1] * height / 100, box[2] * width / 100, box[3] * height / 100)

    def click(self, click: Click) -> Click:
        height, width = self.image.shape[:2]
        return Click(click.x * width / 100, click.y * height / 100, click.positive)


def _mask_prompt(regions: list[dict[str, Any]]) -> tuple[str | None, MaskPrompt]:
    """The label and the prompt (in percent) from smart-tool regions: keypoints are clicks, rectangles boxes."""
    label = None
    boxes, clicks = [], []
    try:
        for region in regions:
            value = region["value"]
            labels = value.get("keypointlabels") or value.get("rectanglelabels") or value.get("labels") or []
            label = label or (labels[0] if labels else None)
            if "width" in value and "height" in value and region.get("type") != "keypointlabels":
                x, y = float(value["x"]), float(value["y"])
                boxes.append((x, y, x + float(value["width"]), y + float(value["height"])))
            else:
                clicks.append(Click(float(value["x"]), float(value["y"]), bool(region.get("is_positive", True))))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"cannot read smart-tool region: {type(exc).__name__}: {exc}") from None
    return label, MaskPrompt(boxes=tuple(boxes), clicks=tuple(clicks))


def _task_state(task: Any, index: int) -> _TaskState:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise BadRequest(f"tasks[{index}] must be an object with a 'data' object")
    task_id = task.get("id")
    return _TaskState(index, task_id if isinstance(task_id, int) else None, task["data"])
