"""Mathematical core of vaebench: the components of a VAE (networks/, posteriors/, likelihoods/,
objectives/, each a folder of registered classes) and the model that composes them (model.py).

    model = build_model(model_config, image_shape)
    loss, logs = model.training_loss(model.preprocess(x_uint8))
"""
from vaebench.vae.model import VAE, build_model

__all__ = ["VAE", "build_model"]
