"""The VAE: an encoder/decoder pair composed with one component of each axis (the benchmark's axes):

    architecture  encoder/decoder networks       -> networks/
    posterior     q(z|x)                         -> posteriors/
    likelihood    p(x|z), owns the data space     -> likelihoods/
    objective     the training loss               -> objectives/      (one module per component in each)

Components are looked up by name in ``vaebench.registry``; this module never branches on a name.
Prior p(z) = N(0, I_d). All per-image quantities are in nats per image (reconstruction summed over every
sub-pixel, KL summed over latent dims); the training loss is the batch mean of a per-image quantity.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.registry import ARCHITECTURES, LIKELIHOODS, OBJECTIVES, POSTERIORS
from vaebench.vae.functional import randn, standard_normal_log_prob
from vaebench.vae.likelihoods import Likelihood
from vaebench.vae.objectives import Objective


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) with pluggable posterior, likelihood and objective.

    Args:
        encoder:    (B, C, H, W) float in [0, 1] -> (B, posterior.head_dim(latent_dim))
        decoder:    (N, latent_dim) -> (N, likelihood.out_channels*C, H, W)
        posterior:  a posterior class (``from_head``, see posteriors/)
        likelihood: a ``Likelihood`` (owns the data space)
        objective:  an ``Objective``
        latent_dim: d
        image_shape: (C, H, W)
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, posterior: type, likelihood: Likelihood,
                 objective: Objective, latent_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.posterior = posterior
        self.likelihood, self.objective = likelihood, objective
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(s) for s in image_shape)

    # --- data -------------------------------------------------------------------------------------------
    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device -> the likelihood's data space on the same device.
        ``generator`` makes binarisation/dequantisation reproducible (may live on another device).
        Raises ValueError for a non-uint8 or non-4D input."""
        return self.likelihood.preprocess(x_uint8, generator)

    def preprocess_fixed(self, x_uint8: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
        """A whole split mapped into the data space once with a seeded CPU generator (its noise is drawn on the
        CPU and moved to the data's device, so a CPU and a GPU score the same data), in batches of
        ``batch_size`` (so validation and test sets are the same every epoch and every model of a likelihood
        family sees the same test data). Returns the data-space tensor on ``x_uint8``'s device."""
        gen = torch.Generator().manual_seed(seed)        # CPU: the same noise on every device
        return torch.cat([self.preprocess(x_uint8[i: i + batch_size], generator=gen)
                          for i in range(0, len(x_uint8), batch_size)])

    # --- building blocks --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        """q(z|x) for data-space x (B, C, H, W); returns a posterior object (posteriors/)."""
        return self.posterior.from_head(self.encoder(self.likelihood.to_unit(x)), self.latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output for z of shape (*S, d) -> (*S, out_channels*C, H, W)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        return out.view(*lead, *out.shape[1:])

    def forward_terms(self, x: torch.Tensor, k: int | None = None, need_sse: bool = False, need_z: bool = False,
                      accumulate: bool = False, generator: torch.Generator | None = None,
                      x_uint8: torch.Tensor | None = None) -> dict:
        """Per-image terms for the objectives (objectives/ docstring), S = (B,) if k is None else (k, B):
        'log_px' S, 'kl' (B,), 'log_w' (k, B) when k is given, 'sse' S when need_sse, 'z' (*S, d) when need_z.
        accumulate=True lets the likelihood update running statistics (optimal-sigma training MSE).
        With the 8-bit images ``x_uint8`` (B, C, H, W) of which ``x`` is the data-space version, also
        'extra_log_px' {column: S} and, when k is given, 'extra_log_w' {column: (k, B)}: the likelihood's
        further columns (``Likelihood.extra_log_probs``) of the same decoder output and samples."""
        q = self.encode(x)
        z = q.rsample(k, generator=generator)
        out = self.decode(z)
        terms = {"log_px": self.likelihood.log_prob(x, out, accumulate=accumulate), "kl": q.kl()}
        if x_uint8 is not None:
            terms["extra_log_px"] = self.likelihood.extra_log_probs(x, x_uint8, out)
        if k is not None:
            log_prior_ratio = standard_normal_log_prob(z) - q.log_prob(z)
            terms["log_w"] = terms["log_px"] + log_prior_ratio
            if x_uint8 is not None:
                terms["extra_log_w"] = {c: v + log_prior_ratio for c, v in terms["extra_log_px"].items()}
        if need_sse:
            terms["sse"] = (self.likelihood.to_unit(x) - self.likelihood.mean(out)).pow(2).sum((-3, -2, -1))
        if need_z:
            terms["z"] = z
        return terms

    # --- public API used by the pipeline ------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar tensor, batch mean, to minimise) and logs (dict of detached 0-dim tensors, nats/image: no
        host synchronisation; see objectives/) of the configured
        objective on data-space x (B, C, H, W). In training mode also updates running state (GECO lambda and
        C_ma, the optimal-sigma running MSE)."""
        obj = self.objective
        terms = self.forward_terms(x, k=obj.k, need_sse=obj.needs_sse, need_z=obj.needs_z, accumulate=self.training)
        return obj(terms)

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
        """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x) i.i.d.: (k, B), nats (Burda et al.
        2016, eq. 8). Uses the posterior's full log-density (AR(1) for the rho-VAE)."""
        return self.forward_terms(x, k=int(k), generator=generator)["log_w"]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, draw: bool = False) -> torch.Tensor | None:
        """Images at z ~ N(0, I): (n, C, H, W) float in [0, 1]. ``draw=False``: the decoder mean (a discrete
        decoder: its expected intensity / 255); ``draw=True``: x ~ p(x|z) (``Likelihood.draw``), None when the
        likelihood cannot be sampled without data. The same generator state gives the same z either way."""
        ref = next(self.parameters())
        z = randn((int(n), self.latent_dim), ref, generator)
        out = self.decode(z)
        return self.likelihood.draw(out, generator) if draw else self.likelihood.mean(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean: data-space x (B, C, H, W) -> (B, C, H, W) float in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).mean))

    def tracked_scalars(self) -> dict[str, float]:
        """The likelihood's and the objective's scalars (log_sigma, lambda, constraint, ...) and
        ``effective_beta``, the objective's KL weight in the "SSE + beta KL" convention given the decoder's
        2 sigma^2 (``Objective.effective_beta``; 1/lambda for GECO), absent when none applies."""
        scalars = dict(self.likelihood.tracked_scalars())
        beta = self.objective.effective_beta(scalars.pop("effective_beta", None))
        if beta is not None:
            scalars["effective_beta"] = beta
        scalars.update(self.objective.tracked_scalars())
        return scalars


def build_model(cfg, image_shape: tuple[int, int, int]) -> VAE:
    """Build a VAE from a model config (a ``vaebench.config.ModelConfig``, or a dict validated into one) for
    images of shape (C, H, W).

    Raises:
        vaebench.config.ConfigError: the dict is not a valid model config (names the key).
        ValueError: ``image_shape`` is not (C, H, W), or the architecture cannot take that size.
    """
    from vaebench.config import ModelConfig, validate_model

    if not isinstance(cfg, ModelConfig):
        cfg = validate_model(cfg)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape: expected (C, H, W), got {image_shape!r}")
    posterior = POSTERIORS.get(cfg.posterior.name)
    likelihood = LIKELIHOODS.build(cfg.likelihood)
    objective = OBJECTIVES.build(cfg.objective)
    encoder, decoder = ARCHITECTURES.build(cfg.architecture).build(
        tuple(image_shape), cfg.latent_dim, posterior.head_dim(cfg.latent_dim), likelihood.out_channels)
    return VAE(encoder, decoder, posterior, likelihood, objective, cfg.latent_dim, image_shape)
