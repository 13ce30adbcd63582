"""Annotations against the model's predictions -> a review report: how good the model is, per label and annotator.

What enters: a project's annotated tasks read through Label Studio's API, each with its stored predictions
(``fetch``); each annotation is matched with the prediction of the model version under review (``matching``);
``metrics`` turns the matches into per-label precision, recall and mean IoU, choice accuracy and a confusion matrix,
per-annotator agreement and the share of predictions accepted unchanged, and (``curves``) the score histogram of
accepted vs corrected objects and F1 against the score threshold, the project's threshold (``thresholds``) marked;
``render`` (with ``figures``) turns that report into the text table ``prelabel report`` prints and the HTML page at
``/report.html``; ``gauges`` sets its numbers at ``/metrics``; ``history`` summarises each report for the store, per
model version. What leaves: the report, plain JSON. Only the "Model disagrees" tab (``backend.ranking.tabs``) is
written to Label Studio, on request.
"""
