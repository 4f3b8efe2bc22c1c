"""Developer tools, not pipeline stages: ``python -m vaebench bench`` and ``dvc-template``."""
