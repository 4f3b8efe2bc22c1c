"""The VAE components (networks/, posteriors/, likelihoods/, objectives/) and the model composing them."""
from vaebench.vae.model import VAE, build_model

__all__ = ["VAE", "build_model"]
