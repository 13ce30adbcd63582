"""Tasks + plan -> one Label Studio prediction per task, in order.

The flow is one-way: fetch each task's images (in parallel, one chunk ahead of the models), send them to each
target's model in batches of the adapter's ``max_batch_size``, turn the answers into regions, and assemble one
entry per task. A task whose image fails, or whose batch fails, gets an empty result and a log line naming
it; the other tasks are still predicted.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend import metrics
from backend.detection import detection_regions
from backend.encode import task_score
from backend.errors import BadRequest, MediaError
from backend.ls_client import LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool
from backend.plan import ExampleRef, Plan, TargetPlan
from model_adapters.base import ExamplePrompt, Query, Task

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
        for target in plan.targets:
            self.pool.get(target.spec, self.model_wait)
        for chunk, images in self._prefetched(states, plan, ls):
            for target in plan.targets:
                self._run_target(target, chunk, images, ls)
        entries = []
        for state in states:
            if state.errors:
                log.warning("task %s: %s", state.task_id, "; ".join(state.errors))
            metrics.TASKS.labels("failed" if state.errors else "predicted").inc()
            entries.append(
                {"result": state.regions, "score": task_score(state.regions), "model_version": plan.model_version}
            )
        return entries

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
    ) -> None:
        key = target.target.value_key
        ready = [(s, images[(s.index, key)]) for s in chunk if (s.index, key) in images]
        adapter = self.pool.get(target.spec, self.model_wait)
        try:
            examples = tuple(self._example_prompt(example, ls) for example in target.examples)
        except MediaError as exc:
            metrics.ERRORS.labels("media").inc()
            for state, _ in ready:
                state.errors.append(f"example image of control {target.target.control!r}: {exc}")
            return
        query = Query((*target.prompts, *examples), target.params)
        for start in range(0, len(ready), adapter.max_batch_size):
            batch = ready[start : start + adapter.max_batch_size]
            try:
                answers = self.pool.run(target.spec, [image for _, image in batch], query)
            except Exception as exc:
                metrics.ERRORS.labels("adapter").inc()
                ids = [s.task_id for s, _ in batch]
                log.exception("%s failed on tasks %s", target.spec.adapter, ids)
                for state, _ in batch:
                    state.errors.append(f"{target.spec.adapter} failed on this batch: {type(exc).__name__}: {exc}")
                continue
            for (state, image), answer in zip(batch, answers, strict=True):
                image_wh = (image.shape[1], image.shape[0])
                if target.target.task is Task.DETECTION:
                    state.regions.extend(detection_regions(answer, target, image_wh))

    def _example_prompt(self, example: ExampleRef, ls: LabelStudioClient | None) -> ExamplePrompt:
        """An example box as the adapter takes it; example images are fetched once and kept (a few)."""
        with self._examples_lock:
            image = self._example_images.get(example.image)
        if image is None:
            image = self.fetcher.load(example.image, task_id=None, ls=ls)
            with self._examples_lock:
                self._example_images[example.image] = image
                while len(self._example_images) > EXAMPLE_IMAGES_KEPT:
                    self._example_images.popitem(last=False)
        height, width = image.shape[:2]
        x, y, w, h = example.rect
        box = (x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100)
        return ExamplePrompt(image, box, key=f"{example.image}#{example.rect}")


def _task_state(task: Any, index: int) -> _TaskState:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise BadRequest(f"tasks[{index}] must be an object with a 'data' object")
    task_id = task.get("id")
    return _TaskState(index, task_id if isinstance(task_id, int) else None, task["data"])
