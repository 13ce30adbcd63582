"""Model answers -> a task score that ranks tasks for labelling (active learning), and Data Manager tabs.

What enters: per task and control, the evidence the runner had when it made the regions (box or mask scores with
their thresholds and, in an ensemble, how many members found each box; a ``Choices`` control's score per label);
what leaves: the prediction's ``score`` in [0, 1], **low = label it next**, so the Data Manager sorted by prediction
score ascending lists the tasks worth an annotator's time first.

``settings`` reads ``extra_params.active_learning``; ``evidence`` turns the runner's ``Detections`` and label scores
into plain arrays; ``strategies`` turns them into per-item certainties and a task score (confidence,
least_confidence, margin, entropy, close_to_threshold, disagreement), compares two predictions of a task (the learned
version against the zero-shot one) and applies the rare-label boost; ``tabs`` creates the "Label next" view through
Label Studio's API.
"""
