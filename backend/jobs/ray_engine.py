"""Pages of tasks -> Ray actors, each running the same ``Runner.predict`` as ``/predict`` -> outcomes, in order.

What enters: a page's tasks to predict, the project's plan and its Label Studio (URL and token: each actor fetches
its images itself, with its own thread pool, one chunk ahead of its model). What leaves: the page's ``Outcome``, as
in-process prediction would give it. The job (``JobRunner``) keeps reading, writing and recording pages in this
process, strictly in order, and hands the engine at most ``slots`` pages at once (two per actor: one predicting, one
waiting), so neither a slow Label Studio nor a slow model makes memory grow.

Ray Core actors rather than a Ray Data pipeline: a job's resumability rests on recording pages in task-id order after
they are written, and on predictions identical to ``/predict``'s; a pool of actors running the existing runner keeps
both, where a Data pipeline would reorder pages and split the runner's fetch-ahead from its models.

Local Ray by default (``ray.init()``); ``RAY_ADDRESS`` joins an existing cluster, whose nodes need prelabel installed
with the extras of the models used. One actor per GPU (``num_gpus`` each) when the cluster has GPUs and
``PRELABEL_DEVICE`` is not ``cpu``, else one per CPU; each actor loads its own copy of the models.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backend.ls_client import LabelStudioClient
from backend.media import MediaFetcher
from backend.models import ModelPool
from backend.plan import Plan
from backend.runner import Outcome, RequestBudget, Runner
from backend.settings import ServerSettings

__all__ = ["RayEngine"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # holds backend/ and model_adapters/


class _Predictor:
    """One model holder on the cluster: a ``Runner`` like a server worker's."""

    def __init__(self, settings: ServerSettings) -> None:
        fetcher = MediaFetcher(settings)
        pool = ModelPool(settings.embedding_cache_items, settings.embedding_cache_mb << 20)
        executor = ThreadPoolExecutor(settings.media_workers, thread_name_prefix="media")
        self.settings = settings
        self.runner = Runner(pool, fetcher, executor, settings.model_wait)

    def predict(self, tasks: list[Any], plan: Plan, url: str, token: str | None) -> Outcome:
        ls = LabelStudioClient(url, token, self.runner.fetcher.session, timeout=self.settings.media_timeout)
        return self.runner.predict(tasks, plan, ls)


class RayEngine:
    """Predicts pages on Ray actors (see the module docstring).

    Args:
        settings: The server settings the actors predict with.
        actors: How many actors; by default one per GPU, else one per CPU of the cluster.
        gpus_per_actor: GPUs each actor reserves (when the cluster has GPUs); fractions share a GPU.
    """

    def __init__(self, settings: ServerSettings, actors: int | None = None, gpus_per_actor: float = 1.0) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=os.environ.get("RAY_ADDRESS") or None,
                runtime_env={"env_vars": {"PYTHONPATH": _PACKAGE_ROOT, "TQDM_DISABLE": "1"}},
                log_to_driver=False,
            )
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0.0) if settings.device != "cpu" else 0.0
        if gpus >= gpus_per_actor:
            count, options = actors or int(gpus // gpus_per_actor), {"num_gpus": gpus_per_actor, "num_cpus": 1}
        else:
            count, options = actors or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}
        if count < 1:
            raise ValueError(f"actors must be at least 1, got {count}")
        remote = ray.remote(**options)(_Predictor)
        self.actors = [remote.remote(settings) for _ in range(count)]
        self.slots = 2 * count
        self._next = itertools.cycle(self.actors)
        self._ray = ray

    def submit(
        self, tasks: list[Any], plan: Plan, ls: LabelStudioClient, budget: RequestBudget
    ) -> Callable[[], Outcome]:
        """Send a page to the next actor; the callable waits for its ``Outcome``.

        The budget stays here (the job checks cancellation between pages): an actor predicts its whole page.
        """
        ref = next(self._next).predict.remote(tasks, plan, ls.base_url, ls.token)
        return lambda: self._ray.get(ref)

    def close(self) -> None:
        """Stop the actors (their models go with them)."""
        for actor in self.actors:
            self._ray.kill(actor)
