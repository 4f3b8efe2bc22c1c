"""GECO, constrained VAE training (Rezende & Viola 2018, "Taming VAEs", arXiv 1810.00597, Algorithm 1),
alone and on top of the IWAE bound."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from vaebench.registry import LIKELIHOODS, OBJECTIVES, ComponentConfig
from vaebench.vae.functional import log_mean_exp
from vaebench.vae.objectives import Objective, batch_logs


def stop_gradient_ma(c_hat: torch.Tensor, c_ma: torch.Tensor) -> torch.Tensor:
    """C_t = C_hat + sg(C_ma - C_hat), scalars (Rezende & Viola 2018, Algorithm 1)."""
    return c_hat + (c_ma - c_hat).detach()


class GecoConfig(ComponentConfig):
    constraint: Literal["sse", "nll"] = Field(
        "sse", description="C = SSE - kappa^2 (sse, summed over pixels on the [0,1] scale) or NLL - kappa (nll, nats).")
    kappa: float = Field(4.0, description="Tolerance per image (kappa^2 for sse).")
    alpha: float = Field(0.99, ge=0, lt=1, description="Decay of the constraint's moving average C_ma.")
    lambda_init: float = Field(1.0, gt=0, description="Initial Lagrange multiplier lambda.")
    lambda_lr: float = Field(1e-4, gt=0, description="Step of log lambda per training step, times C_ma.")


class GecoState(Objective):
    """GECO's Lagrange multiplier and constraint moving average (Rezende & Viola 2018, Algorithm 1), in buffers.
    Raises ValueError for an unknown constraint or out-of-range settings."""

    Config = GecoConfig

    def __init__(self, constraint="sse", kappa=4.0, alpha=0.99, lambda_init=1.0, lambda_lr=1e-4):
        super().__init__()
        if constraint not in ("sse", "nll"):
            raise ValueError(f"objective.constraint: unknown value {constraint!r} (expected 'sse' or 'nll')")
        if not lambda_init > 0:
            raise ValueError(f"objective.lambda_init: must be > 0, got {lambda_init!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"objective.alpha: must be in [0, 1), got {alpha!r}")
        self.constraint, self.kappa = constraint, float(kappa)
        self.alpha, self.lambda_lr = float(alpha), float(lambda_lr)
        self.needs_sse = constraint == "sse"
        self.register_buffer("log_lambda", torch.tensor(math.log(lambda_init), dtype=torch.float64))
        self.register_buffer("c_ma", torch.zeros((), dtype=torch.float64))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.float64))

    @classmethod
    def check_model(cls, model):
        likelihood = LIKELIHOODS.get(model.likelihood.name)
        if model.objective.constraint == "sse" and not likelihood.supports_sse:
            return [("objective.constraint",
                     f"'sse' needs a decoder whose mean is an image on the [0,1] scale; likelihood "
                     f"{likelihood.name!r} does not offer it: use constraint: nll")]
        return []

    def constraint_per_image(self, nll: torch.Tensor, sse: torch.Tensor | None) -> torch.Tensor:
        """C per image: 'sse' SSE - kappa^2, 'nll' NLL - kappa (nats). Shapes (B,)."""
        if self.constraint == "sse":
            return sse - self.kappa ** 2
        return nll - self.kappa

    def step(self, c_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda, C_t) for the batch-mean constraint C_hat (scalar); in training mode updates C_ma and log lambda."""
        lam = torch.exp(self.log_lambda).to(c_hat.dtype)
        started = self.initialized > 0.5
        if self.training:
            with torch.no_grad():
                c = c_hat.detach().double()
                self.c_ma.copy_(torch.where(started, self.alpha * self.c_ma + (1.0 - self.alpha) * c, c))
                self.initialized.fill_(1.0)
                self.log_lambda.add_(self.lambda_lr * self.c_ma)
                started = self.initialized > 0.5
        c_ma = torch.where(started, self.c_ma.to(c_hat.dtype), c_hat.detach())
        return lam, stop_gradient_ma(c_hat, c_ma)

    def state_logs(self) -> dict[str, torch.Tensor]:
        """'lambda' and 'constraint' (C_ma) as detached 0-dim tensors."""
        return {"lambda": torch.exp(self.log_lambda).detach(), "constraint": self.c_ma.detach().clone()}

    def tracked_scalars(self):
        return {k: float(v) for k, v in self.state_logs().items()}


@OBJECTIVES.register
class GECO(GecoState):
    """Minimise the rate subject to a reconstruction constraint E[C] <= 0, with the Lagrangian loss

        loss = mean_B KL + lambda * C_t,   C_t = C_hat + sg(C_ma - C_hat),   C_hat = mean_B C(x, z)

    C = SSE(x, decoder mean) - kappa^2 ('sse') or -log p(x|z) - kappa ('nll'). Single posterior sample.
    """

    name = "geco"
    description = "GECO: minimise KL subject to a reconstruction constraint (Lagrange multiplier lambda)"

    def effective_beta(self, likelihood_beta):
        """1/lambda for the SSE constraint (Rezende & Viola 2018, Section 3), None for the NLL constraint."""
        return 1.0 / float(torch.exp(self.log_lambda)) if self.constraint == "sse" else None

    def forward(self, terms):
        recon, kl = -terms["log_px"], terms["kl"]
        c_hat = self.constraint_per_image(recon, terms.get("sse")).mean()
        lam, c_t = self.step(c_hat)
        loss = kl.mean() + lam * c_t
        logs = batch_logs(loss, recon, kl)
        logs.update(self.state_logs())
        logs["lambda"] = lam.detach().double()
        return loss, logs


@OBJECTIVES.register
class GECOIWAE(GecoState):
    """GECO on top of the IWAE bound, loss to minimise:

        loss = mean_B[ -L_k ] + (lambda - 1) * C_t,   C_t = C_hat + sg(C_ma - C_hat)
        C_hat = mean_B[ R - kappa ]   ('nll'),  R   = -sum_i sg(w~_i) log p(x|z_i)       (self-normalised NLL)
        C_hat = mean_B[ SSE - kappa^2 ] ('sse'), SSE = sum_i sg(w~_i) ||x - mean(z_i)||^2
        w~_i = softmax_i(log w_i)   (importance weights normalised over the k samples of each image)

    lambda = 1 recovers plain IWAE; lambda > 1 (constraint violated) adds reconstruction pressure,
    lambda < 1 (constraint satisfied) removes some. lambda follows the GECO update of ``GecoState``.
    """

    name = "geco_iwae"
    description = "GECO on the IWAE bound L_k"

    def effective_beta(self, likelihood_beta):
        """None: the loss weighs no KL term."""
        return None

    class Config(GecoConfig):
        k: int = Field(5, ge=1, le=5000, description="Importance samples per image in training.")

    def __init__(self, k=5, **kw):
        super().__init__(**kw)
        if int(k) < 1:
            raise ValueError(f"objective.k: must be >= 1, got {k!r}")
        self.k = int(k)

    def forward(self, terms):
        log_w, log_px = terms["log_w"], terms["log_px"]
        w_tilde = torch.softmax(log_w.detach(), dim=0)                    # (k, B)
        nll_sn = -(w_tilde * log_px).sum(0)                               # (B,)
        sse_sn = (w_tilde * terms["sse"]).sum(0) if "sse" in terms else None
        c_hat = self.constraint_per_image(nll_sn, sse_sn).mean()
        lam, c_t = self.step(c_hat)
        L_k = log_mean_exp(log_w)
        loss = -L_k.mean() + (lam - 1.0) * c_t
        logs = batch_logs(loss, -log_px.mean(0), terms["kl"])
        logs.update(self.state_logs())
        logs["lambda"] = lam.detach().double()
        return loss, logs
