"""Mathematical core of vaebench: posteriors, likelihoods, objectives, networks, the VAE and the L_k estimator.

    model = build_model(cfg, image_shape)      # see model.py for the API the pipeline uses
    L = iwae_bound(model, x, k=5000)           # (B,) float64, nats/image
"""
from .estimators import iwae_bound
from .likelihoods import softclip
from .model import VAE, build_model
from .posteriors import log1m_tanh_sq

__all__ = ["VAE", "build_model", "iwae_bound", "softclip", "log1m_tanh_sq"]
