"""The pipeline's stages, one module each; the CLI calls their ``run`` functions."""
