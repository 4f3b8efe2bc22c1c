"""Training objectives registered in ``OBJECTIVES``, each a loss to minimise: ``forward(terms)`` takes the
per-image terms of ``VAE.forward_terms`` and returns (scalar loss, {name: detached 0-dim float64, nats/image})."""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.registry import Component


class Objective(nn.Module, Component):
    """Base class; ``k`` (importance samples, None: one), ``needs_sse``, ``needs_z`` say which terms it reads."""

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
        """KL weight in "SSE + beta KL" (Rybkin et al. 2021, Section 4) given the decoder's 2 sigma^2, or None."""
        return None if likelihood_beta is None else self.kl_weight * likelihood_beta


def batch_logs(loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'loss', 'elbo', 'recon', 'kl'}: batch means, nats/image, as detached 0-dim float64 tensors."""
    recon_m, kl_m = recon.detach().mean().double(), kl.detach().mean().double()
    return {"loss": loss.detach().double(), "elbo": -(recon_m + kl_m), "recon": recon_m, "kl": kl_m}
