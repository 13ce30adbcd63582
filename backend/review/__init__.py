"""Annotations against the model's predictions -> a review report: how good the model is, per label and annotator.

What enters: a project's annotated tasks read through Label Studio's API, each with its stored predictions
(``fetch``); each annotation is matched with the prediction of the model version under review (``matching``);
``metrics`` turns the matches into per-label precision, recall and mean IoU, choice accuracy and a confusion matrix,
per-annotator agreement and the share of predictions accepted unchanged; ``render`` turns that report into the text
table ``prelabel report`` prints and the HTML page at ``/report.html``; ``gauges`` sets its numbers at ``/metrics``.
What leaves: the report, plain JSON. Nothing is written to Label Studio.
"""
