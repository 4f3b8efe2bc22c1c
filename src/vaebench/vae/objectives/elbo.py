"""The (beta-)ELBO: Kingma & Welling 2014, eq. 3; beta of Higgins et al. 2017, eq. 4."""
from __future__ import annotations

from pydantic import Field

from vaebench.registry import OBJECTIVES, ComponentConfig
from vaebench.vae.objectives import Objective, batch_logs


@OBJECTIVES.register
class ELBO(Objective):
    """Negative (beta-)ELBO, single sample: loss = mean_B[ -log p(x|z) + beta KL ]. beta multiplies the KL
    of the reconstruction NLL summed over pixels (so beta = 2 sigma^2 relates it to a Gaussian decoder)."""

    name = "elbo"
    description = "ELBO (single sample), KL weighted by beta"

    class Config(ComponentConfig):
        beta: float = Field(1.0, ge=0, description="Weight of the KL (1 = the ELBO).")

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    @property
    def kl_weight(self) -> float:
        return self.beta

    def forward(self, terms):
        recon, kl = -terms["log_px"], terms["kl"]
        loss = (recon + self.beta * kl).mean()
        return loss, batch_logs(loss, recon, kl)
