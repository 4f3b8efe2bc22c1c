"""Training objectives: ELBO (with beta), IWAE, GECO and GECO+IWAE, each a loss to MINIMISE.

An objective receives the per-image ``terms`` the VAE computed for a batch and returns
``(loss, logs)``: ``loss`` a scalar tensor, the batch mean of a per-image quantity; ``logs`` a dict of
Python floats ('loss', 'elbo', 'recon', 'kl' as batch means in nats/image, plus 'lambda' and
'constraint' for GECO*).

``terms`` (built by ``VAE.forward_terms``; S = (B,) for single-sample objectives, (k, B) otherwise):
    'log_px' S        log p(x|z) in nats per image (summed over pixels)
    'kl'     (B,)     closed-form KL(q(z|x) || p(z)), summed over latent dims
    'log_w'  (k, B)   log p(x|z_i) + log p(z_i) - log q(z_i|x)              (k-sample objectives only)
    'sse'    S        sum over pixels of (x - decoder mean)^2 in [0,1] units  (when ``needs_sse``)

GECO state (log lambda, the moving average C_ma, whether it is initialised) lives in buffers, so it is
saved in checkpoints, and is only updated in training mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def iwae_log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """L_k estimate per image: logsumexp_i(log w_i) - log k, log_w (k, B) -> (B,) (Burda et al. 2016 eq. 8,
    methods.md 5.1). With k identical weights a it returns a; it never exponentiates raw weights."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def stop_gradient_ma(c_hat: torch.Tensor, c_ma: torch.Tensor) -> torch.Tensor:
    """C_t = C_hat + sg(C_ma - C_hat): value of the moving average C_ma, gradient of the batch C_hat
    (Rezende & Viola 2018, Algorithm 1; methods.md 4.2 step 4). Scalars."""
    return c_hat + (c_ma - c_hat).detach()


class ELBO(nn.Module):
    """Negative (beta-)ELBO, single sample: loss = mean_B[ -log p(x|z) + beta KL ] (Kingma & Welling 2014;
    beta-VAE, Higgins et al. 2017). beta multiplies the KL of the properly summed NLL (methods.md 1, 2.1)."""

    k = None
    needs_sse = False

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def forward(self, terms: dict) -> tuple[torch.Tensor, dict]:
        recon, kl = -terms["log_px"], terms["kl"]
        loss = (recon + self.beta * kl).mean()
        return loss, _logs(loss, recon, kl)

    def tracked_scalars(self) -> dict[str, float]:
        return {}


class IWAE(nn.Module):
    """Importance-weighted bound (Burda et al. 2016, methods.md 5.1): loss = -mean_B L_k,
    L_k = logsumexp_i log w_i - log k with log w (k, B) from the posterior's full log q (AR(1) for rho-VAE).
    Logged 'recon'/'kl'/'elbo' are the single-sample ELBO terms averaged over the k samples."""

    needs_sse = False

    def __init__(self, k: int = 5):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"objective.k: must be >= 1, got {k!r}")
        self.k = int(k)

    def forward(self, terms):
        L_k = iwae_log_mean_exp(terms["log_w"])
        loss = -L_k.mean()
        return loss, _logs(loss, -terms["log_px"].mean(0), terms["kl"])

    def tracked_scalars(self):
        return {}


class _GecoState(nn.Module):
    """Lagrange multiplier and moving average shared by GECO and GECO+IWAE (methods.md 4.2).

    Buffers: log_lambda (init log lambda_init), c_ma (C_ma), initialized (0/1).
    Updates (training mode only), with C_hat the batch-mean constraint:
        C_ma <- C_hat (first step) else alpha C_ma + (1 - alpha) C_hat   (no gradient)
        log lambda <- log lambda + lambda_lr * C_ma                       (after computing the loss)
    so lambda grows while the constraint is violated (C_ma > 0) and shrinks once it holds.
    """

    needs_sse = False

    def __init__(self, constraint="sse", kappa=4.0, alpha=0.99, lambda_init=1.0, lambda_lr=1e-3):
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

    def constraint_per_image(self, nll: torch.Tensor, sse: torch.Tensor | None) -> torch.Tensor:
        """C per image: 'sse' SSE - kappa^2, 'nll' NLL - kappa (nats). Shapes (B,)."""
        if self.constraint == "sse":
            return sse - self.kappa ** 2
        return nll - self.kappa

    def step(self, c_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Given the batch-mean constraint C_hat (scalar, with gradient), return (lambda, C_t) for the loss and,
        in training mode, update C_ma now and log lambda with the new C_ma (applied to the next step)."""
        lam = torch.exp(self.log_lambda).to(c_hat.dtype)          # value used in this step's loss
        if self.training:
            with torch.no_grad():
                c = c_hat.detach().double()
                new_ma = c if self.initialized < 0.5 else self.alpha * self.c_ma + (1.0 - self.alpha) * c
                self.c_ma.copy_(new_ma)
                self.initialized.fill_(1.0)
                self.log_lambda.add_(self.lambda_lr * self.c_ma)
        c_ma = self.c_ma.to(c_hat.dtype) if self.initialized > 0.5 else c_hat.detach()
        return lam, stop_gradient_ma(c_hat, c_ma)

    def tracked_scalars(self):
        return {"lambda": float(torch.exp(self.log_lambda)), "constraint": float(self.c_ma)}


class GECO(_GecoState):
    """GECO (Rezende & Viola 2018 "Taming VAEs", methods.md 4.1-4.2): minimise the rate subject to a
    reconstruction constraint E[C] <= 0, with the Lagrangian loss

        loss = mean_B KL + lambda * C_t,   C_t = C_hat + sg(C_ma - C_hat),   C_hat = mean_B C(x, z)

    C = SSE(x, decoder mean) - kappa^2 ('sse', SSE summed over pixels of one image, [0,1] units) or
    C = -log p(x|z) - kappa ('nll', nats/image). Single posterior sample.
    """

    k = None

    def forward(self, terms):
        recon, kl = -terms["log_px"], terms["kl"]
        c_hat = self.constraint_per_image(recon, terms.get("sse")).mean()
        lam, c_t = self.step(c_hat)
        loss = kl.mean() + lam * c_t
        logs = _logs(loss, recon, kl)
        logs.update(self.tracked_scalars())
        logs["lambda"] = float(lam)
        return loss, logs


class GECOIWAE(_GecoState):
    """GECO on top of the IWAE bound (tv-student Taming-VAEs slides, methods.md 5.5), loss to minimise:

        loss = mean_B[ -L_k ] + (lambda - 1) * C_t,   C_t = C_hat + sg(C_ma - C_hat)
        C_hat = mean_B[ R - kappa ]   ('nll'),  R   = -sum_i sg(w~_i) log p(x|z_i)       (self-normalised NLL)
        C_hat = mean_B[ SSE - kappa^2 ] ('sse'), SSE = sum_i sg(w~_i) ||x - mean(z_i)||^2
        w~_i = softmax_i(log w_i)   (importance weights normalised over the k samples of each image)

    lambda = 1 recovers plain IWAE; lambda > 1 (constraint violated) adds reconstruction pressure,
    lambda < 1 (constraint satisfied) removes some. lambda follows the GECO update of ``_GecoState``.
    """

    def __init__(self, k=5, **kw):
        super().__init__(**kw)
        if int(k) < 1:
            raise ValueError(f"objective.k: must be >= 1, got {k!r}")
        self.k = int(k)

    def forward(self, terms):
        log_w, log_px = terms["log_w"], terms["log_px"]
        w_tilde = torch.softmax(log_w.detach(), dim=0)                    # (k, B), sums to 1 over k
        nll_sn = -(w_tilde * log_px).sum(0)                               # (B,)
        sse_sn = (w_tilde * terms["sse"]).sum(0) if "sse" in terms else None
        c_hat = self.constraint_per_image(nll_sn, sse_sn).mean()
        lam, c_t = self.step(c_hat)
        L_k = iwae_log_mean_exp(log_w)
        loss = -L_k.mean() + (lam - 1.0) * c_t
        logs = _logs(loss, -log_px.mean(0), terms["kl"])
        logs.update(self.tracked_scalars())
        logs["lambda"] = float(lam)
        return loss, logs


def _logs(loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, float]:
    """Batch means (nats/image) as Python floats: loss, recon, kl, elbo = -(recon + kl)."""
    recon_m, kl_m = float(recon.detach().mean()), float(kl.detach().mean())
    return {"loss": float(loss.detach()), "elbo": -(recon_m + kl_m), "recon": recon_m, "kl": kl_m}


def build_objective(cfg: dict) -> nn.Module:
    """Objective from a config dict (keys of the model config's 'objective' entry; defaults: beta 1, k 5,
    constraint sse, kappa 4, alpha 0.99, lambda_init 1, lambda_lr 1e-3). Raises ValueError naming the key."""
    name = cfg.get("name", "elbo")
    geco_kw = dict(
        constraint=cfg.get("constraint", "sse"),
        kappa=cfg.get("kappa", 4.0),
        alpha=cfg.get("alpha", 0.99),
        lambda_init=cfg.get("lambda_init", 1.0),
        lambda_lr=cfg.get("lambda_lr", 1e-3),
    )
    if name == "elbo":
        return ELBO(beta=cfg.get("beta", 1.0))
    if name == "iwae":
        return IWAE(k=cfg.get("k", 5))
    if name == "geco":
        return GECO(**geco_kw)
    if name == "geco_iwae":
        return GECOIWAE(k=cfg.get("k", 5), **geco_kw)
    raise ValueError(f"objective.name: unknown value {name!r} (expected elbo, iwae, geco or geco_iwae)")
