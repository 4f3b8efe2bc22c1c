"""The importance-weighted bound L_k (Burda, Grosse, Salakhutdinov 2016, eq. 8)."""
from __future__ import annotations

from pydantic import Field

from vaebench.registry import OBJECTIVES, ComponentConfig
from vaebench.vae.functional import log_mean_exp
from vaebench.vae.objectives import Objective, batch_logs


@OBJECTIVES.register
class IWAE(Objective):
    """loss = -mean_B L_k, L_k = logsumexp_i log w_i - log k, log w (k, B) from the posterior's full log q
    (the AR(1) density for a rho-VAE). Logged 'recon'/'kl'/'elbo' are the single-sample ELBO terms
    averaged over the k samples."""

    name = "iwae"
    description = "IWAE bound L_k with k importance samples"

    class Config(ComponentConfig):
        k: int = Field(5, ge=1, le=5000, description="Importance samples per image in training.")

    def __init__(self, k: int = 5):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"objective.k: must be >= 1, got {k!r}")
        self.k = int(k)

    def forward(self, terms):
        L_k = log_mean_exp(terms["log_w"])
        loss = -L_k.mean()
        return loss, batch_logs(loss, -terms["log_px"].mean(0), terms["kl"])
