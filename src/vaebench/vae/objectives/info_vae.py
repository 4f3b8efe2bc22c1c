"""InfoVAE with an MMD divergence between q(z) and p(z) (Zhao, Song, Ermon 2019, Section 3; MMD: Gretton et
al. 2012, Lemma 6). The MMD is in kernel units, not nats."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from vaebench.registry import OBJECTIVES, ComponentConfig
from vaebench.vae.objectives import Objective, batch_logs


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, scale: float) -> torch.Tensor:
    """k(a_i, b_j), a (n, d), b (m, d) -> (n, m): 'imq' C / (C + ||a - b||^2) (Tolstikhin et al. 2018, Section 4)
    or 'rbf' exp(-||a - b||^2 / C), C = ``scale``. Raises ValueError for an unknown kernel."""
    sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    if kernel == "imq":
        return scale / (scale + sq)
    if kernel == "rbf":
        return torch.exp(-sq / scale)
    raise ValueError(f"objective.kernel: unknown value {kernel!r} (expected 'imq' or 'rbf')")


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scale: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 of samples x (n, d) and y (m, d), a scalar in kernel units (Gretton et al. 2012, Lemma 6).
    Raises ValueError when n or m < 2 or the dimensions differ."""
    n, m = x.shape[0], y.shape[0]
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or n < 2 or m < 2:
        raise ValueError(f"mmd2_unbiased needs x (n, d) and y (m, d) with n, m >= 2; got {tuple(x.shape)}, {tuple(y.shape)}")
    kxx, kyy, kxy = (kernel_matrix(x, x, kernel, scale), kernel_matrix(y, y, kernel, scale),
                     kernel_matrix(x, y, kernel, scale))
    off_xx = kxx.sum() - kxx.diagonal().sum()
    off_yy = kyy.sum() - kyy.diagonal().sum()
    return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - 2.0 * kxy.mean()


@OBJECTIVES.register
class InfoVAE(Objective):
    """InfoVAE with an MMD divergence, single posterior sample per image; loss to minimise:

        loss = mean_B[ -log p(x|z) + (1 - alpha) KL(q(z|x) || p(z)) ] + (alpha + lambda - 1) MMD^2(z, z')

    z (B, d) the posterior samples of the batch, z' (B, d) fresh N(0, I) draws (torch's global RNG, so the
    training seed fixes them). Kernel scale C = 2 d sigma^2 with sigma^2 = ``kernel_variance`` (the prior's
    per-dimension variance, 1), as in Tolstikhin et al. 2018. Logs 'mmd' besides the ELBO terms.
    """

    name = "info_vae"
    description = "InfoVAE: (1 - alpha) KL plus (alpha + lambda - 1) MMD between q(z) and p(z)"
    needs_z = True
    batch_terms = Objective.batch_terms + ("mmd",)

    class Config(ComponentConfig):
        alpha: float = Field(0.0, le=1, description="1 - alpha weights the per-image KL (alpha = 1: no KL).")
        lambda_: float = Field(1000.0, alias="lambda", gt=0,
                               description="alpha + lambda - 1 weights MMD(q(z), p(z)) (must be >= 0).")
        kernel: Literal["imq", "rbf"] = Field("imq", description="MMD kernel: inverse multiquadric or Gaussian.")
        kernel_variance: float = Field(1.0, gt=0, description="sigma^2 of the kernel scale C = 2 d sigma^2.")

        @model_validator(mode="after")
        def _mmd_weight_non_negative(self):
            if self.alpha + self.lambda_ - 1.0 < 0:
                raise ValueError(f"alpha + lambda - 1 = {self.alpha + self.lambda_ - 1.0:g} < 0 would reward a "
                                 "larger MMD between q(z) and p(z)")
            return self

    def __init__(self, alpha: float = 0.0, lambda_: float = 1000.0, kernel: str = "imq", kernel_variance: float = 1.0):
        super().__init__()
        if kernel not in ("imq", "rbf"):
            raise ValueError(f"objective.kernel: unknown value {kernel!r} (expected 'imq' or 'rbf')")
        self.alpha, self.lambda_ = float(alpha), float(lambda_)
        self.kernel, self.kernel_variance = kernel, float(kernel_variance)

    @property
    def kl_weight(self) -> float:
        return 1.0 - self.alpha

    def forward(self, terms):
        recon, kl, z = -terms["log_px"], terms["kl"], terms["z"]
        z_prior = torch.randn_like(z)
        mmd = mmd2_unbiased(z, z_prior, self.kernel, 2.0 * z.shape[-1] * self.kernel_variance)
        loss = (recon + (1.0 - self.alpha) * kl).mean() + (self.alpha + self.lambda_ - 1.0) * mmd
        logs = batch_logs(loss, recon, kl)
        logs["mmd"] = mmd.detach().double()
        return loss, logs
