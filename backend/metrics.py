"""Prometheus metrics: requests, latency per route and adapter, errors, model load time, review numbers.

Under gunicorn with several workers, ``prelabel serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before this module
is imported, so every worker writes its samples there and ``/metrics`` aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

__all__ = [
    "ADAPTER_IMAGES",
    "ADAPTER_SECONDS",
    "ERRORS",
    "FITS",
    "FIT_SECONDS",
    "JOBS",
    "JOB_TASKS",
    "MODEL_LOAD_SECONDS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "REVIEW_LABEL",
    "REVIEW_PROJECT",
    "TASKS",
    "render",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("prelabel_requests", "HTTP requests served", ["route", "method", "status"])
REQUEST_SECONDS = Histogram("prelabel_request_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS)
ADAPTER_SECONDS = Histogram(
    "prelabel_adapter_batch_seconds", "Model time per batch (preprocess+forward+postprocess)", ["adapter"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
ADAPTER_IMAGES = Counter("prelabel_adapter_images", "Images sent to a model", ["adapter"])
TASKS = Counter("prelabel_tasks", "Tasks predicted, by outcome", ["outcome"])
ERRORS = Counter("prelabel_errors", "Errors by kind (media, adapter, model_load, request, internal)", ["kind"])
FITS = Counter("prelabel_fits", "Fits of learned versions, by outcome (fitted, nothing_to_learn, failed)", ["outcome"])
FIT_SECONDS = Histogram("prelabel_fit_seconds", "Time of a fit, from claim to new version", buckets=_LATENCY_BUCKETS)
JOBS = Counter("prelabel_jobs", "Bulk jobs ended, by state (done, failed, cancelled)", ["state"])
JOB_TASKS = Counter(
    "prelabel_job_tasks", "Tasks bulk jobs finished, by outcome (predicted, skipped, failed)", ["outcome"]
)
MODEL_LOAD_SECONDS = Histogram(
    "prelabel_model_load_seconds", "Time to load a model", ["adapter", "model_id"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)  # fmt: skip
# Set each time a review report is made (/report, /report.html, prelabel report goes to its own process): the latest
# report's numbers, whichever worker made it.
REVIEW_LABEL = Gauge(
    "prelabel_review_label", "Review per label: precision, recall, mean_iou (latest report)",
    ["project", "model_version", "control", "label", "metric"], multiprocess_mode="mostrecent",
)  # fmt: skip
REVIEW_PROJECT = Gauge(
    "prelabel_review_project", "Review per project: agreement, unchanged, annotations, and accuracy per Choices control",
    ["project", "model_version", "control", "metric"], multiprocess_mode="mostrecent",
)  # fmt: skip


def render() -> tuple[bytes, str]:
    """Metrics in Prometheus text format, aggregated over workers when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"
    return generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8"
