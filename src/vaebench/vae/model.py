"""The VAE: one encoder/decoder pair composed with three independent choices (the benchmark's axes):

    posterior   q(z|x):   diagonal | ar1 (rho-VAE)                      -> posteriors.py
    likelihood  p(x|z):   bernoulli | gaussian(sigma mode) | categorical -> likelihoods.py
    objective   loss:     elbo(beta) | iwae(k) | geco | geco_iwae        -> objectives.py

Prior p(z) = N(0, I_d). All per-image quantities are in nats per image (reconstruction summed over every
sub-pixel, KL summed over latent dims); the training loss is the batch mean of a per-image quantity.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .likelihoods import Likelihood, build_likelihood
from .networks import build_networks
from .objectives import ELBO, build_objective
from .posteriors import _randn, make_posterior, posterior_head_dim, standard_normal_log_prob


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) with pluggable posterior, likelihood and objective.

    Args:
        encoder:    (B, C, H, W) float in [0, 1] -> (B, head_dim)
        decoder:    (N, latent_dim) -> (N, out_channels*C, H, W)
        posterior:  'diagonal' | 'ar1'
        likelihood: a ``Likelihood`` (owns the data space, see ``data_kind``)
        objective:  an objective module from objectives.py
        latent_dim: d
        image_shape: (C, H, W)
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, posterior: str, likelihood: Likelihood,
                 objective: nn.Module, latent_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.posterior_kind = posterior
        self.likelihood, self.objective = likelihood, objective
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(s) for s in image_shape)

    # --- data -------------------------------------------------------------------------------------------
    @property
    def data_kind(self) -> str:
        """'binary' (dynamic binarisation, float {0,1}), 'dequantized' ((x + u)/256, float) or 'discrete'
        (integer intensities 0..255, long)."""
        return self.likelihood.data_kind

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device -> model data space on the same device (see ``data_kind``).
        ``generator`` makes binarisation/dequantisation reproducible (may live on another device).
        Raises ValueError for a non-uint8 or non-4D input."""
        return self.likelihood.preprocess(x_uint8, generator)

    # --- building blocks --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        """q(z|x) for data-space x (B, C, H, W); returns a posterior object (posteriors.py)."""
        return make_posterior(self.posterior_kind, self.encoder(self.likelihood.to_unit(x)), self.latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output for z of shape (*S, d) -> (*S, out_channels*C, H, W)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        return out.view(*lead, *out.shape[1:])

    def forward_terms(self, x: torch.Tensor, k: int | None = None, need_sse: bool = False,
                      accumulate: bool = False, generator: torch.Generator | None = None) -> dict:
        """Per-image terms for the objectives (objectives.py docstring), S = (B,) if k is None else (k, B):
        'log_px' S, 'kl' (B,), 'log_w' (k, B) when k is given, 'sse' S when need_sse.
        accumulate=True lets the likelihood update running statistics (optimal-sigma training MSE)."""
        q = self.encode(x)
        z = q.rsample(k, generator=generator)
        out = self.decode(z)
        terms = {"log_px": self.likelihood.log_prob(x, out, accumulate=accumulate), "kl": q.kl()}
        if k is not None:
            terms["log_w"] = terms["log_px"] + standard_normal_log_prob(z) - q.log_prob(z)
        if need_sse:
            terms["sse"] = (self.likelihood.to_unit(x) - self.likelihood.mean(out)).pow(2).sum((-3, -2, -1))
        return terms

    # --- public API used by the pipeline ------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar tensor, batch mean, to minimise) and logs (dict of floats, nats/image) of the configured
        objective on data-space x (B, C, H, W). In training mode also updates running state (GECO lambda and
        C_ma, the optimal-sigma running MSE)."""
        terms = self.forward_terms(x, k=self.objective.k, need_sse=self.objective.needs_sse,
                                   accumulate=self.training)
        return self.objective(terms)

    def end_epoch(self) -> None:
        """Call at the end of each training epoch: freezes the optimal-sigma running MSE for evaluation."""
        self.likelihood.end_epoch()

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Single-sample ELBO with closed-form KL, per image (B,) in nats: {'elbo', 'recon', 'kl'},
        recon = -log p(x|z), elbo = -(recon + kl). Uses the evaluation-time sigma when not training.
        Does not update running state."""
        terms = self.forward_terms(x, k=None, generator=generator)
        recon = -terms["log_px"]
        return {"elbo": -(recon + terms["kl"]), "recon": recon, "kl": terms["kl"]}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x) i.i.d.: (k, B), nats (methods.md 5.1).
        Uses the posterior's full log-density (AR(1) for rho-VAE)."""
        return self.forward_terms(x, k=int(k), generator=generator)["log_w"]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder mean at z ~ N(0, I): (n, C, H, W) float in [0, 1] (categorical: expected intensity / 255)."""
        ref = next(self.parameters())
        z = _randn((int(n), self.latent_dim), ref, generator)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean: data-space x (B, C, H, W) -> (B, C, H, W) float in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).mean))

    def tracked_scalars(self) -> dict[str, float]:
        """log_sigma / effective_beta (Gaussian shared sigma; for the elbo objective effective_beta = 2 sigma^2 beta,
        the KL weight in the "SSE + beta KL" convention) / lambda, constraint (GECO*) where they exist, else {}."""
        scalars = dict(self.likelihood.tracked_scalars())
        if isinstance(self.objective, ELBO) and "effective_beta" in scalars:
            scalars["effective_beta"] *= self.objective.beta
        scalars.update(self.objective.tracked_scalars())
        return scalars


def build_model(cfg: dict, image_shape: tuple[int, int, int]) -> VAE:
    """Build a VAE from a model config dict (see the package docs; keys architecture, latent_dim, hidden_dims,
    posterior, likelihood{...}, objective{...}; missing optional keys take their defaults) for images of
    shape (C, H, W). Raises ValueError naming the key for unknown values or conv28 on non-28x28 images."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape: expected (C, H, W), got {image_shape!r}")
    latent_dim = cfg.get("latent_dim", 20)
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim: must be a positive int, got {latent_dim!r}")
    posterior = cfg.get("posterior", "diagonal")
    head_dim = posterior_head_dim(posterior, latent_dim)
    likelihood = build_likelihood(cfg.get("likelihood", {}) or {})
    objective = build_objective(cfg.get("objective", {}) or {})
    encoder, decoder = build_networks(cfg.get("architecture", "mlp"), tuple(image_shape), latent_dim, head_dim,
                                      likelihood.out_channels, cfg.get("hidden_dims"))
    return VAE(encoder, decoder, posterior, likelihood, objective, latent_dim, image_shape)
