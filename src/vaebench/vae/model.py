"""The VAE: one registered architecture, posterior, likelihood and objective; prior N(0, I_d); nats per image."""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.registry import ARCHITECTURES, LIKELIHOODS, OBJECTIVES, POSTERIORS
from vaebench.vae.functional import randn, standard_normal_log_prob
from vaebench.vae.likelihoods import Likelihood
from vaebench.vae.objectives import Objective


class VAE(nn.Module):
    """VAE (Kingma & Welling 2014). ``encoder``: (B, C, H, W) in [0, 1] -> (B, posterior.head_dim(d));
    ``decoder``: (N, d) -> (N, likelihood.out_channels*C, H, W); ``posterior`` is a class; image_shape (C, H, W)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, posterior: type, likelihood: Likelihood,
                 objective: Objective, latent_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.posterior = posterior
        self.likelihood, self.objective = likelihood, objective
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(s) for s in image_shape)

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the likelihood's data space, same device. Raises ValueError if not 4-D uint8."""
        return self.likelihood.preprocess(x_uint8, generator)

    def preprocess_fixed(self, x_uint8: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
        """A whole split preprocessed once, in batches, with a seeded CPU generator; on ``x_uint8``'s device."""
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([self.preprocess(x_uint8[i: i + batch_size], generator=gen)
                          for i in range(0, len(x_uint8), batch_size)])

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
        """Per-image terms, nats, S = (B,) if k is None else (k, B): 'log_px' S, 'kl' (B,), 'log_w' (k, B), 'sse'
        S, 'z' (*S, d); with ``x_uint8`` also 'extra_log_px' {column: S} and 'extra_log_w' {column: (k, B)}."""
        q = self.encode(x)
        z = q.rsample(k, generator=generator)
        out = self.decode(z)
        log_prior_ratio = None if k is None else standard_normal_log_prob(z) - q.log_prob(z)
        return self.assemble_terms(x, out, q.kl(), log_prior_ratio, z if need_z else None, need_sse, accumulate,
                                   x_uint8)

    def assemble_terms(self, x: torch.Tensor, out: torch.Tensor, kl: torch.Tensor,
                       log_prior_ratio: torch.Tensor | None, z: torch.Tensor | None, need_sse: bool,
                       accumulate: bool, x_uint8: torch.Tensor | None) -> dict:
        """The terms dict of ``forward_terms`` from the decoder output ``out`` (*S, out_channels*C, H, W), the KL
        term (B,) and, with k samples, log p(z) - log q(z|x) (k, B) (None without k): 'log_px', 'kl',
        'extra_log_px', 'log_w' = log_px + log_prior_ratio, 'extra_log_w', 'sse' as requested, and 'z' = the
        sampled latents z (*S, D) unless z is None; nats per image."""
        terms = {"log_px": self.likelihood.log_prob(x, out, accumulate=accumulate), "kl": kl}
        if x_uint8 is not None:
            terms["extra_log_px"] = self.likelihood.extra_log_probs(x, x_uint8, out)
        if log_prior_ratio is not None:
            terms["log_w"] = terms["log_px"] + log_prior_ratio
            if x_uint8 is not None:
                terms["extra_log_w"] = {c: v + log_prior_ratio for c, v in terms["extra_log_px"].items()}
        if need_sse:
            terms["sse"] = (self.likelihood.to_unit(x) - self.likelihood.mean(out)).pow(2).sum((-3, -2, -1))
        if z is not None:
            terms["z"] = z
        return terms

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scalar loss to minimise, {name: detached 0-dim tensor, nats/image}) on data-space x (B, C, H, W)."""
        obj = self.objective
        terms = self.forward_terms(x, k=obj.k, need_sse=obj.needs_sse, need_z=obj.needs_z, accumulate=self.training)
        return obj(terms)

    def end_epoch(self) -> None:
        """Call at the end of each training epoch."""
        self.likelihood.end_epoch()

    @torch.no_grad()
    def calibrate(self, x_uint8: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        """Set the likelihood's test-time state from one pass over uint8 images (N, C, H, W) with the current
        weights in eval mode, one z ~ q(z|x) per image (an optimal shared sigma: sigma^2 = their MSE)."""
        was_training = self.training
        self.eval()
        try:
            for i in range(0, len(x_uint8), batch_size):
                x = self.preprocess(x_uint8[i: i + batch_size], generator=generator)
                self.forward_terms(x, accumulate=True, generator=generator)
            self.likelihood.end_epoch()
        finally:
            self.train(was_training)

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Single-sample ELBO, closed-form KL: {'elbo', 'recon' = -log p(x|z), 'kl'}, each (B,) nats."""
        terms = self.forward_terms(x, k=None, generator=generator)
        recon = -terms["log_px"]
        return {"elbo": -(recon + terms["kl"]), "recon": recon, "kl": terms["kl"]}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x): (k, B), nats (Burda et al. 2016, eq. 8)."""
        return self.forward_terms(x, k=int(k), generator=generator)["log_w"]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, draw: bool = False) -> torch.Tensor | None:
        """Images at z ~ N(0, I), (n, C, H, W) in [0, 1]: the decoder mean, or with ``draw`` x ~ p(x|z) (or None)."""
        ref = next(self.parameters())
        z = randn((int(n), self.latent_dim), ref, generator)
        out = self.decode(z)
        return self.likelihood.draw(out, generator) if draw else self.likelihood.mean(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean: data-space x (B, C, H, W) -> (B, C, H, W) float in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).mean))

    def tracked_scalars(self) -> dict[str, float]:
        """The likelihood's and objective's scalars, with ``effective_beta`` (KL weight of "SSE + beta KL") if any."""
        scalars = dict(self.likelihood.tracked_scalars())
        beta = self.objective.effective_beta(scalars.pop("effective_beta", None))
        if beta is not None:
            scalars["effective_beta"] = beta
        scalars.update(self.objective.tracked_scalars())
        return scalars


def build_model(cfg, image_shape: tuple[int, ...]) -> VAE:
    """A VAE from a ``ModelConfig`` (or a dict validated into one) for images (C, H, W), or for videos (T, C, H, W)
    with a sequence architecture; an architecture with a ``build_vae(image_shape, latent_dim, posterior, likelihood,
    objective)`` method builds the model itself (a VAE subclass; a sequence architecture gets the frame shape).
    Raises ConfigError (an invalid dict) or ValueError (``image_shape`` not (C, H, W), or (T, C, H, W) for a
    sequence architecture, or a size the architecture cannot take)."""
    from vaebench.config import ModelConfig, validate_model

    if not isinstance(cfg, ModelConfig):
        cfg = validate_model(cfg)
    posterior = POSTERIORS.get(cfg.posterior.name)
    likelihood = LIKELIHOODS.build(cfg.likelihood)
    objective = OBJECTIVES.build(cfg.objective)
    architecture = ARCHITECTURES.build(cfg.architecture)
    want = "(T, C, H, W) videos" if architecture.sequence else "(C, H, W) images"
    if len(image_shape) != (4 if architecture.sequence else 3):
        raise ValueError(f"image_shape: architecture {cfg.architecture.name!r} takes {want}, got {tuple(image_shape)!r}")
    image_shape = tuple(int(s) for s in image_shape[-3:])
    if hasattr(architecture, "build_vae"):
        return architecture.build_vae(image_shape, cfg.latent_dim, posterior, likelihood, objective)
    encoder, decoder = architecture.build(
        image_shape, cfg.latent_dim, posterior.head_dim(cfg.latent_dim), likelihood.out_channels)
    return VAE(encoder, decoder, posterior, likelihood, objective, cfg.latent_dim, image_shape)
