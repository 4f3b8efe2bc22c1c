"""The pipeline's stages: thin orchestration that reads a stage's inputs (``vaebench.paths``), calls the
library (``data``, ``vae``, ``metrics``, ``report``), writes outputs atomically and logs to MLflow. One
module per stage; the CLI (``python -m vaebench <stage>``) calls their ``run`` functions."""
