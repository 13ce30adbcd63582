"""Learning from a project's annotations: webhook events in, a new model version out.

The flow is one way, like prediction's::

    webhook payloads -> annotation changes (events) -> the project's annotations (store)
      -> training examples per control (examples) -> image features and detections, cached on disk (features)
      -> heads and calibrated thresholds (heads) -> a versioned, atomically written artifact (versions)

``Learner`` runs it: webhooks only record changes and ask for a fit; fits run in the background, debounced, one
at a time per project across gunicorn workers (a lease in the store). Predictions read the newest artifact
through ``overlay``, which turns a plan into the learned plan served under ``<base version>-fit<N>``.
"""
