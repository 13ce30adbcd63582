"""Detector answers -> fewer false positives: what a project can add to the detection path, all optional.

What enters: each detector's ``supervision.Detections`` for an image (or its tiles); what leaves: one
``Detections`` per image in original-image pixels, ``class_id`` = label. Per detector, ``tiling`` cuts a large
image into tiles and merges the tiles' boxes across the seams, and ``negatives`` drops the boxes a negative prompt
vetoes (while prompt ids become labels, in ``backend.detection.labelled``); ``fusion`` fuses an ensemble's
detectors per label (weighted boxes fusion); ``verify`` classifies each box's crop among the labels and a
background and keeps, drops or relabels it. The runner calls them in that order; none of them sees Label Studio
JSON or a model: the runner makes the model calls.
"""
