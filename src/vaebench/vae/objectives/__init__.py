"""Training objectives, each a loss to MINIMISE, one module per objective, each class registered in
``vaebench.registry.OBJECTIVES``.

An objective receives the per-image ``terms`` the VAE computed for a batch and returns
``(loss, logs)``: ``loss`` a scalar tensor, the batch mean of a per-image quantity; ``logs`` a dict of
detached 0-dim float64 tensors on the model's device ('loss', 'elbo', 'recon', 'kl' as batch means in
nats/image, plus the objective's own, e.g. 'lambda' and 'constraint' for GECO). They stay tensors so that a
training step never waits for the device (no host synchronisation); callers convert them to floats once per
epoch (``float(v)``).

``terms`` (built by ``VAE.forward_terms``; S = (B,) for single-sample objectives, (k, B) otherwise):
    'log_px' S        log p(x|z) in nats per image (summed over pixels)
    'kl'     (B,)     closed-form KL(q(z|x) || p(z)), summed over latent dims
    'log_w'  (k, B)   log p(x|z_i) + log p(z_i) - log q(z_i|x)              (when ``k`` is set)
    'sse'    S        sum over pixels of (x - decoder mean)^2 in [0,1] units  (when ``needs_sse``)
    'z'      (*S, d)  the posterior samples                                   (when ``needs_z``)

What an objective needs is declared on it: ``k`` (importance samples per image, None for one),
``needs_sse``, ``needs_z``. State (e.g. GECO's Lagrange multiplier) lives in buffers, so it is saved in
checkpoints; it is only updated in training mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.registry import Component


class Objective(nn.Module, Component):
    """Base class: metadata and the defaults of the interface described in the package docstring.

    Attributes:
        k: importance samples per image in training (None: one sample, terms have S = (B,)).
        needs_sse: the objective reads terms['sse'].
        needs_z: the objective reads terms['z'].
        kl_weight: the weight of the KL in the loss relative to the reconstruction NLL (beta of a
            beta-VAE; 1 otherwise); reported as part of the effective beta.
        batch_terms: the keys of the batch logs kept per epoch (training and validation means).
    """

    k: int | None = None
    needs_sse: bool = False
    needs_z: bool = False
    kl_weight: float = 1.0
    batch_terms: tuple[str, ...] = ("loss", "elbo", "recon", "kl")

    def forward(self, terms: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def tracked_scalars(self) -> dict[str, float]:
        """Scalars worth logging every epoch. Default: none."""
        return {}

    def effective_beta(self, likelihood_beta: float | None) -> float | None:
        """The KL weight this objective amounts to in the "SSE + beta KL" convention (sigma = 1/sqrt(2)
        reference, beta = 2 sigma^2; Rybkin et al. 2021, Section 4), or None when no such weight exists.

        Args:
            likelihood_beta: the decoder's own 2 sigma^2 (a Gaussian decoder with one shared sigma), None
                for decoders without a shared sigma.
        Default: ``kl_weight * likelihood_beta`` (a beta-VAE on a shared-sigma Gaussian decoder).
        """
        return None if likelihood_beta is None else self.kl_weight * likelihood_beta


def batch_logs(loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch means (nats/image) as detached 0-dim float64 tensors, without a host synchronisation:
    loss, recon, kl, elbo = -(recon + kl). ``recon`` and ``kl`` are per image (B,) or (k, B); their means are
    taken in their own dtype and then widened, so the values equal the Python floats of those means."""
    recon_m, kl_m = recon.detach().mean().double(), kl.detach().mean().double()
    return {"loss": loss.detach().double(), "elbo": -(recon_m + kl_m), "recon": recon_m, "kl": kl_m}
