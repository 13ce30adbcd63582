"""Bulk prelabel jobs: a whole project (or a view, or named tasks) predicted in the background, resumable.

The flow is one-way: a filter and a cursor -> task pages read through Label Studio's API (``pages``) -> the same
plan, ``Runner`` and adapters as ``/predict`` (``runner``) -> predictions written through the API in pages
(``writer``); the job's state, its cursor and per-task failures live in SQLite under ``MODEL_DIR`` (``store``), so
a job killed at any point continues where it stopped, with no task written twice and none lost. Jobs come from
``POST /jobs``, from a retrieve too large for Label Studio's timeout, or from ``prelabel bulk`` (``loop`` runs them
in a server; ``report`` says how they are doing).
"""
