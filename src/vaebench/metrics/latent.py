"""Latent-space analysis, nats per image: rate = I(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016, eq. 2-3)
and active units (Burda, Grosse & Salakhutdinov 2016, Section 5.2); for sequence models with a learned prior, the
rate per frame and active units against that prior."""
from __future__ import annotations

import math

import torch

from vaebench.vae.functional import standard_normal_log_prob

ACTIVE_UNIT_THRESHOLD = 0.01
MI_SATURATION_MARGIN_NATS = 0.1


def aggregate_log_prob(posteriors: list, z: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """log q(z) of the aggregate posterior (1/N) sum_m q(z|x_m) over the batches ``posteriors``, at z (M, d),
    in blocks of ``chunk`` points: (M,) float64 nats. Raises ValueError (no posteriors, z shape, chunk < 1)."""
    if not posteriors:
        raise ValueError("aggregate_log_prob: need at least one posterior batch")
    if int(chunk) < 1:
        raise ValueError(f"aggregate_log_prob: chunk must be >= 1, got {chunk!r}")
    d = posteriors[0].mean.shape[-1]
    if z.dim() != 2 or z.shape[-1] != d:
        raise ValueError(f"aggregate_log_prob: z must be (M, {d}), got {tuple(z.shape)}")
    chunk = int(chunk)
    n_total = sum(q.mean.shape[0] for q in posteriors)
    out = []
    for start in range(0, z.shape[0], chunk):
        zc = z[start: start + chunk].unsqueeze(1)
        block_lse = [torch.logsumexp(q.log_prob(zc).double(), dim=1) for q in posteriors]
        out.append(torch.logsumexp(torch.stack(block_lse), dim=0))
    return torch.cat(out) - math.log(n_total)


@torch.no_grad()
def latent_analysis(model, x: torch.Tensor, batch_size: int = 500, n_samples: int = 1, seed: int = 0,
                    chunk: int = 500, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[dict, dict]:
    """Rate (closed form; a hierarchical model's own KL estimate), marginal KL against the model's prior
    (``model.prior_log_prob`` when it has one, else N(0, I)) and mutual information (Monte Carlo on the same ``n_samples`` z ~ q(z|x) per
    image) and active units (posterior-mean variance > ``threshold``) of ``model`` on data-space images
    x (N, C, H, W), in eval mode, seeded.

    MI = mean of log q(z|x_m) - log q(z) over those samples (Hoffman & Johnson 2016, eq. 3); each term is at most
    log N, so the estimate is clipped at log N and flagged ``mutual_info_saturated`` within
    ``MI_SATURATION_MARGIN_NATS`` of it (it then says only MI >= about log N).

    A hierarchical model's posterior (one with ``kl_layers`` and ``layer_dims``) is also analysed per layer, bottom
    first: 'layer_dims', 'rate_per_layer_nats' (the mean of each layer's KL term; they sum to the rate) and
    'active_units_per_layer' (the active units among each layer's dimensions).

    Returns (scalars: 'rate_nats', 'marginal_kl_nats', 'mutual_info_nats', 'mutual_info_saturated',
    'active_units', 'n_images', 'latent_dim', 'n_samples', 'log_n_nats', 'unit_variances' (and the per-layer
    lists); float64 CPU arrays:
    'rate_per_image' (N,), 'unit_variances' (d,), 'log_q_z_given_x', 'log_q_z' and 'log_p_z' (n_samples, N),
    'z' (n_samples, N, d)). Raises ValueError for N < 2, a setting < 1 or mismatched posterior shapes."""
    n = int(x.shape[0]) if x.dim() > 0 else 0
    if n < 2:
        raise ValueError(f"latent_analysis: need N >= 2 images, got {n}")
    for name, value in (("batch_size", batch_size), ("n_samples", n_samples), ("chunk", chunk)):
        if int(value) < 1:
            raise ValueError(f"latent_analysis: {name} must be >= 1, got {value!r}")
    batch_size, n_samples, chunk = int(batch_size), int(n_samples), int(chunk)

    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    try:
        gen = torch.Generator().manual_seed(int(seed))
        posteriors, samples, own = [], [], []
        for start in range(0, n, batch_size):
            q = model.encode(x[start: start + batch_size])
            if q.mean.dim() != 2 or q.mean.shape[0] != min(batch_size, n - start):
                raise ValueError(f"latent_analysis: posterior mean must be (B, d), got {tuple(q.mean.shape)}")
            posteriors.append(q)
            samples.append(q.rsample(n_samples, generator=gen))
            own.append(q.log_prob(samples[-1]).double())
        d = posteriors[0].mean.shape[-1]
        if any(q.mean.shape[-1] != d for q in posteriors):
            raise ValueError("latent_analysis: posterior batches disagree on latent_dim")

        layered = hasattr(posteriors[0], "kl_layers")
        if layered:
            per_layer = [torch.stack(q.kl_layers(), dim=-1).double() for q in posteriors]
            kl_layers = torch.cat(per_layer).cpu()                                  # (N, L)
            kl = kl_layers.sum(-1)
        else:
            kl = torch.cat([q.kl().double() for q in posteriors]).cpu()
        mu = torch.cat([q.mean.double() for q in posteriors]).cpu()
        z = torch.cat(samples, dim=1)
        log_q_z = aggregate_log_prob(posteriors, z.reshape(-1, d), chunk).reshape(n_samples, n).cpu()
        prior = getattr(model, "prior_log_prob", None)      # a hierarchical model's p(h_1..h_L); else N(0, I)
        log_p_z = (standard_normal_log_prob(z.double()) if prior is None else prior(z).double()).cpu()
        log_q_z_given_x = torch.cat(own, dim=1).cpu()
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)

    rate = kl.mean().item()
    marginal_kl = (log_q_z - log_p_z).mean().item()
    mutual_info = min((log_q_z_given_x - log_q_z).mean().item(), math.log(n))
    unit_var = mu.var(dim=0, unbiased=True)
    scalars = {
        "rate_nats": rate,
        "marginal_kl_nats": marginal_kl,
        "mutual_info_nats": mutual_info,
        "mutual_info_saturated": mutual_info >= math.log(n) - MI_SATURATION_MARGIN_NATS,
        "active_units": int((unit_var > threshold).sum().item()),
        "n_images": n,
        "latent_dim": int(d),
        "n_samples": n_samples,
        "log_n_nats": math.log(n),
        "unit_variances": [float(v) for v in unit_var],
    }
    if layered:
        dims = [int(v) for v in posteriors[0].layer_dims]
        scalars["layer_dims"] = dims
        scalars["rate_per_layer_nats"] = [float(v) for v in kl_layers.mean(0)]
        scalars["active_units_per_layer"] = [int((u > threshold).sum().item()) for u in unit_var.split(dims)]
    arrays = {"rate_per_image": kl, "unit_variances": unit_var, "log_q_z_given_x": log_q_z_given_x,
              "log_q_z": log_q_z, "log_p_z": log_p_z,
              "z": z.double().cpu()}
    return scalars, arrays


@torch.no_grad()
def sequence_latent_analysis(model, x: torch.Tensor, batch_size: int = 500,
                             threshold: float = ACTIVE_UNIT_THRESHOLD) -> dict:
    """Rate and active units of a sequence model with a learned prior (SVG-LP, ``vaebench.vae.sequence``) on
    data-space videos x (N, T, C, H, W), in eval mode, nats per sequence.

    Rate: E_x sum_t KL(q(z_t | x_<=t) || p(z_t | x_<t)) over the T - 1 scored frames (closed form), and its mean
    per frame index. Active units: Burda, Grosse & Salakhutdinov's criterion (2016, Section 5.2) applied to the
    posterior's departure from the learned prior, the posterior mean standardised by the prior,
    (mu_q - mu_p) / sigma_p: a unit is active when that varies over the N (T - 1) test frames with variance above
    ``threshold``. With q = p every unit is inactive; with a fixed N(0, I) prior it is Burda's criterion.
    The aggregate-posterior terms (marginal KL, mutual information) are not defined against a prior conditioned on
    the past and are not computed.

    Returns {'rate_nats', 'rate_per_frame_nats' (T - 1 floats), 'active_units', 'unit_variances' (d floats),
    'n_sequences', 'latent_dim'}. Raises ValueError for N < 2, batch_size < 1 or a model without
    ``posterior_and_prior``."""
    if not hasattr(model, "posterior_and_prior"):
        raise ValueError(f"sequence_latent_analysis: {type(model).__name__} has no learned prior "
                         "(posterior_and_prior); use latent_analysis")
    n = int(x.shape[0])
    if n < 2 or int(batch_size) < 1:
        raise ValueError(f"sequence_latent_analysis: need N >= 2 sequences and batch_size >= 1, got N={n}, "
                         f"batch_size={batch_size!r}")
    steps, d = x.shape[1] - 1, model.latent_dim
    was_training = model.training
    model.eval()
    try:
        kls, deltas = [], []
        for start in range(0, n, int(batch_size)):
            h, _ = model.encode_frames(model.likelihood.to_unit(x[start: start + int(batch_size)]))
            q, p = model.posterior_and_prior(h)
            kls.append(q.kl_to_diagonal(p.mu, p.logvar).double().view(-1, steps).cpu())
            deltas.append(((q.mu - p.mu) * torch.exp(-0.5 * p.logvar)).double().cpu())
    finally:
        model.train(was_training)
    kl = torch.cat(kls)                                                   # (N, T-1)
    unit_var = torch.cat(deltas).var(dim=0, unbiased=True)                # (d,)
    return {"rate_nats": kl.sum(-1).mean().item(),
            "rate_per_frame_nats": [float(v) for v in kl.mean(0)],
            "active_units": int((unit_var > threshold).sum().item()),
            "unit_variances": [float(v) for v in unit_var],
            "n_sequences": n, "latent_dim": int(d)}
