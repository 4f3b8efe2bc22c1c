"""Developer tools, not pipeline stages: the benchmark (``python -m vaebench bench``) and the offline DVC plots page
(``python -m vaebench dvc-template``)."""
