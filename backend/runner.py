"""Tasks + plan -> one Label Studio answer per task, in order.

The flow is one-way: fetch each task's images (in parallel, one chunk ahead of the models, decoded no larger than
the models need), send them to each target's model in batches of the adapter's ``max_batch_size``, map the answers
back to the original image, turn them into regions, and assemble one entry per task. Detection targets pass through
the stages their settings name (tiles, ensemble fusion, crop verification: ``backend.refine``) on the way.

A task that could not be predicted (its image failed, its batch failed, or the request ran out of time or lost its
client) is answered with an empty list: zero predictions, which Label Studio stores nothing for, so the next
retrieve sends the task again. An empty ``result`` would be stored as that version's final prediction and the task
never retried. The reasons are returned for the log and the status page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import supervision as sv

from backend import metrics
from backend.classification import choice_regions, label_scores
from backend.detection import detection_regions, labelled, settled, suppressed
from backend.encode import task_score
from backend.errors import BadRequest, CredentialsRefused, MediaError
from backend.ls_client import LabelStudioClient
from backend.media import FetchedImage, MediaFetcher, ScaleRule
from backend.models import ModelPool
from backend.plan import Plan, TargetPlan
from backend.prompts import ExampleRef
from backend.ranking.evidence import Evidence, box_evidence, choice_evidence
from backend.ranking.strategies import rank_score
from backend.refine.fusion import Member, weighted_boxes_fusion
from backend.refine.tiling import MAX_TILES, Tiling, merge_tiles, windows
from backend.refine.verify import class_shares, crops, verdicts
from backend.segmentation import finish_masks, mask_regions
from model_adapters.base import Adapter, ExamplePrompt, Query, Task
from model_adapters.segmentation import Click, MaskPrompt

__all__ = ["Outcome", "RequestBudget", "Runner"]

log = logging.getLogger(__name__)

# Most tasks whose images are held in memory at once (and fetched while the previous chunk is on the model).
CHUNK_TASKS = 16
# The first chunk is small, so the time per task is known before a large chunk could overrun the budget.
FIRST_CHUNK_TASKS = 4
# Example images (few-shot prompts from the settings) kept decoded between requests.
EXAMPLE_IMAGES_KEPT = 32


@dataclass
class RequestBudget:
    """When a request should stop predicting: its time is up, or its client has gone.

    Attributes:
        seconds: Time the request may spend predicting (Label Studio gives ``/predict`` 100 s, then abandons it).
        client_gone: Whether the caller has hung up (checked between chunks).
    """

    seconds: float = float("inf")
    client_gone: Callable[[], bool] = lambda: False
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        """Seconds since the request started."""
        return time.monotonic() - self.started

    def stop_reason(self, next_tasks: int, seconds_per_task: float) -> str | None:
        """Why the next ``next_tasks`` should not start, if they should not."""
        if self.client_gone():
            return "the client hung up (Label Studio stops waiting after ML_TIMEOUT_PREDICT)"
        if self.elapsed() + next_tasks * seconds_per_task > self.seconds:
            return f"the request's time budget (PRELABEL_PREDICT_BUDGET={self.seconds:g} s) ran out"
        return None


@dataclass
class Outcome:
    """What ``Runner.predict`` answers: one entry per task, and why the others got none.

    Attributes:
        entries: Per task, a prediction ``{"result", "score", "model_version"}`` or ``[]`` (no prediction).
        failed: Task id -> reasons, for tasks whose prediction failed.
        unreached: Ids of tasks not started before the request stopped.
        stop_reason: Why it stopped early, if it did.
        credentials_refused: Image fetches for which Label Studio refused prelabel's credentials.
        waiting: Controls whose model answers only through a learned head, which the project has not fitted yet.
    """

    entries: list[Any]
    failed: dict[int | None, list[str]] = field(default_factory=dict)
    unreached: list[int | None] = field(default_factory=list)
    stop_reason: str | None = None
    credentials_refused: int = 0
    waiting: list[str] = field(default_factory=list)


@dataclass
class _TaskState:
    index: int  # position in the request: the key for its fetched images
    task_id: int | None
    data: dict[str, Any]
    regions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reached: bool = False
    skipped: list[str] = field(default_factory=list)  # controls whose model cannot answer yet (no learned head)
    evidence: list[Evidence] = field(default_factory=list)  # what the score ranks by (backend.ranking)


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

    def predict(
        self,
        tasks: Sequence[Any],
        plan: Plan,
        ls: LabelStudioClient | None,
        budget: RequestBudget | None = None,
    ) -> Outcome:
        """Predict every task the budget allows (see the module docstring for what the others get).

        Raises:
            BadRequest: A task is not an object with a ``data`` object.
            ModelUnavailable: A model the plan needs failed to load or is still loading.
        """
        budget = budget or RequestBudget()
        states = [_task_state(task, i) for i, task in enumerate(tasks)]
        for spec in plan.batch_specs():
            self.pool.get(spec, self.model_wait)
        scales = self._scale_rules(plan)
        outcome = Outcome(entries=[])
        for chunk, images in self._prefetched(states, plan, ls, scales, budget, outcome):
            shared: dict[Any, dict[int, sv.Detections]] = {}
            for target in plan.targets:
                self._run_target(target, chunk, images, ls, shared)
        for state in states:
            if not state.reached:
                outcome.unreached.append(state.task_id)
                outcome.entries.append([])
            elif state.errors:
                metrics.TASKS.labels("failed").inc()
                outcome.failed[state.task_id] = state.errors
                outcome.entries.append([])
            else:
                metrics.TASKS.labels("predicted").inc()
                score = rank_score(plan.ranking.strategy, state.evidence, state.regions)
                outcome.entries.append({"result": state.regions, "score": score, "model_version": plan.model_version})
        if outcome.unreached:
            metrics.TASKS.labels("unreached").inc(len(outcome.unreached))
        outcome.waiting = sorted({control for state in states for control in state.skipped})
        return outcome

    def _scale_rules(self, plan: Plan) -> dict[str, ScaleRule | None]:
        """Per image key, how far its image may be shrunk: the least any model reading it shrinks it by itself.

        Tiles and crops need the original pixels: an image a target tiles, or whose boxes it verifies, is read
        unshrunk.
        """
        readers: dict[str, list[ScaleRule | None]] = {}
        for target in plan.targets:
            scorer = target.detector or target
            resize = [self.pool.get(s, self.model_wait).resize_rule for s in target.model_specs()]
            rule: ScaleRule | None = None
            if None not in resize and scorer.verify is None:
                rule = lambda w, h, rs=resize: max(r.scale(w, h) for r in rs)  # noqa: E731
                if scorer.tiling is not None:
                    rule = lambda w, h, t=scorer.tiling, r=rule: 1.0 if t.applies(w, h) else r(w, h)  # noqa: E731
            readers.setdefault(target.target.value_key, []).append(rule)
        return {
            key: None if None in rules else (lambda w, h, rs=rules: max(r(w, h) for r in rs))
            for key, rules in readers.items()
        }

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
        for i, region in enumerate(regions):
            if not isinstance(region.get("from_name"), str):
                raise BadRequest(f"params.context.result[{i}].from_name must be the name of a smart control")
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
        segmenter = self.pool.get(route.spec, self.model_wait)
        try:
            rule = segmenter.resize_rule.scale if segmenter.resize_rule else None
            fetched = self.fetcher.load(value, task_id=state.task_id, ls=ls, scale=rule)
        except MediaError as exc:
            metrics.ERRORS.labels("media").inc()
            log.warning("task %s: image %r: %s", state.task_id, output.value_key, exc)
            return [answer]
        image = fetched.pixels
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
        labelled = _to_original(labelled, fetched)
        labelled = labelled[labelled.mask.reshape(len(labelled), -1).sum(axis=1) >= route.post.min_area]
        result = mask_regions(labelled, output, route.post, fetched.size_wh)
        return [{"result": result, "score": task_score(result), "model_version": plan.model_version}]

    def _prefetched(
        self,
        states: list[_TaskState],
        plan: Plan,
        ls: LabelStudioClient | None,
        scales: dict[str, ScaleRule | None],
        budget: RequestBudget,
        outcome: Outcome,
    ) -> Iterator[tuple[list[_TaskState], dict[tuple[int, str], FetchedImage]]]:
        """Yield chunks of tasks with their decoded images, fetching the next chunk meanwhile.

        Chunks are sized by the time per task seen so far, so the request stops within its budget.
        """
        keys = sorted({t.target.value_key for t in plan.targets})
        queue: list[tuple[list[_TaskState], dict[tuple[int, str], Future[FetchedImage]]]] = []
        submitted, processed, size, per_task = 0, 0, FIRST_CHUNK_TASKS, 0.0
        while True:
            while submitted < len(states) and len(queue) < 2:  # one chunk on the model, the next one fetching
                chunk = states[submitted : submitted + size]
                in_flight = sum(len(c) for c, _ in queue) + len(chunk)
                outcome.stop_reason = budget.stop_reason(in_flight, per_task)
                if outcome.stop_reason:
                    log.warning("stopped after %d of %d tasks: %s", processed, len(states), outcome.stop_reason)
                    submitted = len(states)
                    break
                queue.append((chunk, self._fetch(chunk, keys, ls, scales)))
                submitted += len(chunk)
            if not queue:
                return
            if budget.client_gone():
                outcome.stop_reason = budget.stop_reason(0, 0.0)
                log.warning("stopped after %d of %d tasks: %s", processed, len(states), outcome.stop_reason)
                for _, futures in queue:
                    for future in futures.values():
                        future.cancel()
                return
            chunk, futures = queue.pop(0)
            images = {}
            for (index, key), future in futures.items():
                try:
                    images[(index, key)] = future.result()
                except MediaError as exc:
                    metrics.ERRORS.labels("media").inc()
                    outcome.credentials_refused += isinstance(exc, CredentialsRefused)
                    states[index].errors.append(f"image {key!r}: {exc}")
            for state in chunk:
                state.reached = True
            yield chunk, images
            processed += len(chunk)
            per_task = budget.elapsed() / processed
            size = min(CHUNK_TASKS, size * 2)

    def _fetch(
        self,
        chunk: list[_TaskState],
        keys: list[str],
        ls: LabelStudioClient | None,
        scales: dict[str, ScaleRule | None],
    ) -> dict[tuple[int, str], Future[FetchedImage]]:
        futures: dict[tuple[int, str], Future[FetchedImage]] = {}
        for state in chunk:
            for key in keys:
                if key not in state.data:
                    state.errors.append(f"task data has no {key!r} (the config reads ${key})")
                    continue
                futures[(state.index, key)] = self.executor.submit(
                    self.fetcher.load, state.data[key], task_id=state.task_id, ls=ls, scale=scales.get(key)
                )
        return futures

    def _run_target(
        self,
        target: TargetPlan,
        chunk: list[_TaskState],
        images: dict[tuple[int, str], FetchedImage],
        ls: LabelStudioClient | None,
        shared: dict[Any, Any],
    ) -> None:
        """Regions of one control for a chunk of tasks."""
        key = target.target.value_key
        ready = [(s, images[(s.index, key)]) for s in chunk if (s.index, key) in images]
        if target.detector is not None:  # a promptable segmenter: boxes from the detector, then masks
            boxes = self._detect(target.detector, ready, ls, shared)
            for state, image in ready:
                if state.index in boxes:
                    self._segment_boxes(target, state, image, boxes[state.index])
                    state.evidence.append(box_evidence(boxes[state.index], target.detector))
            return
        if target.target.task is Task.DETECTION:
            boxes = self._detect(target, ready, ls, shared)
            for state, image in ready:
                if state.index in boxes:
                    state.regions.extend(detection_regions(boxes[state.index], target, image.size_wh))
                    state.evidence.append(box_evidence(boxes[state.index], target))
            return
        answers = self._answers(target, ready, ls, shared)
        for (state, image), answer in zip(ready, answers, strict=True):
            if answer is None:
                continue
            if target.target.task is Task.CLASSIFICATION:
                state.regions.extend(choice_regions(answer, target))
                state.evidence.append(choice_evidence(label_scores(answer, target), target))
            else:
                masks = finish_masks(answer, target, prompt_ids=True)
                state.regions.extend(mask_regions(masks, target.target, target.post, image.size_wh))
                state.evidence.append(box_evidence(masks, target))

    def _detect(
        self,
        target: TargetPlan,
        ready: list[tuple[_TaskState, FetchedImage]],
        ls: LabelStudioClient | None,
        shared: dict[Any, Any],
    ) -> dict[int, sv.Detections]:
        """A detection target's final boxes per task, through the stages its settings name (``backend.refine``).

        Each detector (the target's, or each member of its ensemble) answers the whole image or its tiles; the
        answers are labelled (negatives applied) and merged across tiles; an ensemble's members are fused; crops
        are verified; then thresholds, NMS and the cap apply to the final scores.
        """
        members = target.members or (Member(target),)
        found: list[dict[int, sv.Detections]] = []
        for member in members:
            boxes = self._boxes(member.plan, target.tiling, ready, ls, shared)
            if target.members:
                boxes = {index: suppressed(b, member.plan.post) for index, b in boxes.items()}
            found.append(boxes)
        out: dict[int, sv.Detections] = {}
        for state, image in ready:
            if not all(state.index in boxes for boxes in found):
                continue
            answer = found[0][state.index]
            if target.members:
                answer = weighted_boxes_fusion(
                    [boxes[state.index] for boxes in found], [m.weight for m in members], target.post.fusion_iou
                )
            if target.verify is not None:
                answer = self._verified(target, state, image, answer)
                if answer is None:
                    continue
            out[state.index] = settled(answer, target)
        return out

    def _boxes(
        self,
        plan: TargetPlan,
        tiling: Tiling | None,
        ready: list[tuple[_TaskState, FetchedImage]],
        ls: LabelStudioClient | None,
        shared: dict[Any, Any],
    ) -> dict[int, sv.Detections]:
        """One detector's labelled boxes per task: on the whole image, or on its tiles (and the whole) merged."""
        views: list[tuple[_TaskState, FetchedImage]] = []
        corners: list[tuple[float, float]] = []
        for state, image in ready:
            width, height = image.pixels.shape[1], image.pixels.shape[0]
            if tiling is None or not tiling.applies(*image.size_wh):
                views.append((state, image))
                corners.append((0.0, 0.0))
                continue
            sx, sy = image.scale_xy
            cut = windows(width, height, _in_pixels(tiling, image))
            if len(cut) > MAX_TILES:  # a setting must not turn one image into hours of forwards
                state.errors.append(
                    f"detection.tiling cuts this {image.size_wh[0]}x{image.size_wh[1]} image into {len(cut)} tiles, "
                    f"over {MAX_TILES}: use a larger tile or less overlap"
                )
                continue
            if tiling.whole:
                views.append((state, image))
                corners.append((0.0, 0.0))
            for x0, y0, x1, y1 in cut:
                tile = FetchedImage(image.pixels[y0:y1, x0:x1], (round((x1 - x0) * sx), round((y1 - y0) * sy)))
                views.append((state, tile))
                corners.append((x0 * sx, y0 * sy))
        answers = self._answers(plan, views, ls, shared, tiling)
        parts: dict[int, list[tuple[tuple[float, float], sv.Detections]]] = {}
        failed = {state.index for (state, _), answer in zip(views, answers, strict=True) if answer is None}
        sizes = {state.index: image.size_wh for state, image in ready}
        for (state, _), corner, answer in zip(views, corners, answers, strict=True):
            if state.index not in failed:
                parts.setdefault(state.index, []).append((corner, labelled(answer, plan, sizes[state.index])))
        return {  # an image that was not tiled answers exactly as without tiling
            index: merge_tiles(found, tiling.merge_ios) if len(found) > 1 else found[0][1]
            for index, found in parts.items()
        }

    def _verified(
        self, target: TargetPlan, state: _TaskState, image: FetchedImage, found: sv.Detections
    ) -> sv.Detections | None:
        """Crop verification of one image's boxes (``None``: the classifier failed; the task records why)."""
        verify = target.verify
        if len(found) == 0:
            return found
        classifier = verify.plan
        pieces = crops(image.pixels, found.xyxy, image.scale_xy, verify.margin)
        size = self.pool.get(classifier.spec, self.model_wait).max_batch_size
        query = Query(classifier.prompts, classifier.params)
        try:
            rows = [
                row
                for start in range(0, len(pieces), size)
                for row in self.pool.run(classifier.spec, pieces[start : start + size], query)
            ]
        except Exception as exc:
            self._failed(classifier.spec.adapter, [state], exc)
            return None
        classes = len(target.target.labels) + 1
        shares = np.stack([class_shares(row, classifier.prompt_labels, classes) for row in rows])
        return verdicts(found, shares, target.target.labels, verify.action)

    def _answers(
        self,
        target: TargetPlan,
        ready: list[tuple[_TaskState, FetchedImage]],
        ls: LabelStudioClient | None,
        shared: dict[Any, Any],
        tiling: Tiling | None = None,
    ) -> list[sv.Detections | None]:
        """The model's answer per image of ``ready``, in batches, in original-image pixels (``None``: none).

        Targets asking the same question share one pass. A failed batch (or example image) is recorded on its tasks,
        which get no answer.
        """
        queries = tuple(q.key for q in target.queries)
        key = (target.spec, repr(target.params), target.prompts, target.examples, queries, target.head,
               target.target.value_key, tiling)  # fmt: skip
        if key in shared:
            return shared[key]
        answers: list[sv.Detections | None] = [None] * len(ready)
        shared[key] = answers
        adapter = self.pool.get(target.spec, self.model_wait)
        if target.head is None and not adapter.zero_shot:
            for state, _ in ready:
                if target.target.control not in state.skipped:
                    state.skipped.append(target.target.control)
            return answers
        try:
            examples = tuple(self._example_prompt(example, ls) for example in target.examples)
        except MediaError as exc:
            metrics.ERRORS.labels("media").inc()
            for state, _ in ready:
                state.errors.append(f"example image of control {target.target.control!r}: {exc}")
            return answers
        query = Query((*target.prompts, *examples, *target.queries), target.params)
        for batch in _batches([image.pixels.shape for _, image in ready], adapter):
            pixels = [ready[i][1].pixels for i in batch]
            try:
                results = (
                    self.pool.run(target.spec, pixels, query) if target.head is None else self._head(target, pixels)
                )
            except Exception as exc:
                self._failed(target.spec.adapter, list({ready[i][0].index: ready[i][0] for i in batch}.values()), exc)
                continue
            for i, answer in zip(batch, results, strict=True):
                answers[i] = _to_original(answer, ready[i][1])
        return answers

    def _head(self, target: TargetPlan, pixels: list[np.ndarray]) -> list[sv.Detections]:
        """A learned head's answers: the model embeds the images, the head scores the embeddings."""
        return self.pool.call(
            target.spec, lambda adapter: target.head.answer(adapter.embed(pixels), pixels), len(pixels)
        )

    def _segment_boxes(self, target: TargetPlan, state: _TaskState, image: FetchedImage, boxes: sv.Detections) -> None:
        """Grounded segmentation: one decoder call for all of an image's boxes; the boxes keep label and score."""
        if len(boxes) == 0:
            return
        sx, sy = image.scale_xy
        prompt = MaskPrompt(boxes=tuple((a / sx, b / sy, c / sx, d / sy) for a, b, c, d in boxes.xyxy.tolist()))
        try:
            masks = self.pool.call(
                target.spec, lambda adapter: adapter.segment(image.pixels, prompt, params=target.params), 1
            )
        except Exception as exc:
            self._failed(target.spec.adapter, [state], exc)
            return
        labelled = sv.Detections(xyxy=masks.xyxy, mask=masks.mask, confidence=boxes.confidence, class_id=boxes.class_id)
        finished = finish_masks(_to_original(labelled, image), target, prompt_ids=False)
        state.regions.extend(mask_regions(finished, target.target, target.post, image.size_wh))

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
            image = self.fetcher.load(example.image, task_id=None, ls=ls).pixels
            with self._examples_lock:
                self._example_images[source] = image
                while len(self._example_images) > EXAMPLE_IMAGES_KEPT:
                    self._example_images.popitem(last=False)
        height, width = image.shape[:2]
        x, y, w, h = example.rect
        box = (x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100)
        return ExamplePrompt(image, box, key=f"{source}#{example.rect}")


def _to_original(answer: sv.Detections, image: FetchedImage) -> sv.Detections:
    """An answer on ``image.pixels`` in the coordinates of the original image (boxes scaled, masks resized)."""
    sx, sy = image.scale_xy
    if (sx, sy) == (1.0, 1.0) or len(answer) == 0:
        return answer
    width, height = image.size_wh
    mask = None
    if answer.mask is not None:
        mask = (
            np.stack(
                [cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) for m in answer.mask]
            )
            > 0
        )
    return sv.Detections(
        xyxy=(answer.xyxy * np.array([sx, sy, sx, sy])).astype(np.float32),
        mask=mask,
        confidence=answer.confidence,
        class_id=answer.class_id,
        data=answer.data,
        metadata=answer.metadata,
    )


def _batches(shapes: list[tuple[int, ...]], adapter: Adapter) -> Iterator[list[int]]:
    """Positions of the images in batches of at most ``max_batch_size`` sharing the adapter's ``batch_key``.

    Only images with equal keys answer in a batch as they would alone (e.g. no padding to another image's size).
    """
    groups: dict[Hashable, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(adapter.batch_key(shape), []).append(i)
    for group in groups.values():
        for start in range(0, len(group), adapter.max_batch_size):
            yield group[start : start + adapter.max_batch_size]


def _in_pixels(tiling: Tiling, image: FetchedImage) -> Tiling:
    """The tiling in the coordinates of ``image.pixels`` (smaller than the original when it was shrunk)."""
    scale = max(image.scale_xy)
    return tiling if scale == 1.0 else dataclasses.replace(tiling, tile=max(64, round(tiling.tile / scale)))


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
