"""Evaluation metrics: bounds on log p(x) (``bounds``), Frechet distances (``fid``) and the feature
classifier that defines ``fid_classifier`` (``classifier``)."""
