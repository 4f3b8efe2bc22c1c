"""Latent-space analysis of a trained VAE: rate, marginal KL, mutual information and active units.

With the prior p(z) = N(0, I_d), the posteriors q(z|x_n) of N test images x_1..x_N and their aggregate
posterior q(z) = (1/N) sum_n q(z|x_n), the average KL term of the ELBO (the *rate*) splits into
(Hoffman & Johnson 2016, "ELBO surgery: yet another way to carve up the variational evidence lower bound",
eq. 2-3):

    rate = E_n KL(q(z|x_n) || p(z)) = I(x; z) + KL(q(z) || p(z))
                                      (mutual information)  (marginal KL)

where I(x; z) is the mutual information between the image index n (uniform on 1..N) and z under
q(n, z) = q(z|x_n) / N. Rybkin et al. 2021 ("Simple and Effective VAE Training with Calibrated Decoders",
Section 5.2) report these to show how the decoder variance trades rate against posterior collapse;
active units follow Burda, Grosse & Salakhutdinov 2016 ("Importance Weighted Autoencoders", Section 5.2).

Units: nats per image throughout. Works for every posterior family in ``vaebench.vae.posteriors`` (any
object with ``mean`` (B, d), ``rsample(k, generator)``, ``log_prob(z)`` that broadcasts z (*S, B, d) against
its batch, and ``kl()`` (B,)).
"""
from __future__ import annotations

import math

import torch

from vaebench.vae.functional import standard_normal_log_prob

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, Section 5.2


def aggregate_log_prob(posteriors: list, z: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """log q(z) = logsumexp_m log q(z | x_m) - log N of the aggregate posterior q(z) = (1/N) sum_m q(z|x_m).

    The dense (M, N) matrix of log q(z_i | x_m) is evaluated in blocks of ``chunk`` points times one
    posterior batch (memory ~ chunk * B_m * d elements), by feeding z of shape (chunk, 1, d) to the
    posterior of a batch of B_m images (broadcast to (chunk, B_m, d) -> (chunk, B_m)). Block log-densities
    are converted to float64 before the logsumexp combination.

    Args:
        posteriors: posterior objects (vaebench.vae.posteriors) of consecutive batches of images; together
            they hold N = sum_b B_b components, each weighted 1/N.
        z: points (M, d) at which to evaluate q(z) (any device/dtype of the posteriors).
        chunk: points per block (>= 1); the result does not depend on it (up to float rounding).
    Returns:
        (M,) float64, log q(z_i) in nats.
    Raises:
        ValueError: no posteriors, z not (M, d) with d = latent_dim, or chunk < 1.
    """
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
        zc = z[start: start + chunk].unsqueeze(1)                             # (c, 1, d)
        block_lse = [torch.logsumexp(q.log_prob(zc).double(), dim=1) for q in posteriors]  # each (c,)
        out.append(torch.logsumexp(torch.stack(block_lse), dim=0))
    return torch.cat(out) - math.log(n_total)


@torch.no_grad()
def latent_analysis(model, x: torch.Tensor, batch_size: int = 500, n_samples: int = 1, seed: int = 0,
                    chunk: int = 500, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[dict, dict]:
    """Rate, marginal KL, mutual information and active units of ``model`` on the N images ``x``.

    Definitions (p(z) = N(0, I_d), q(z) = (1/N) sum_n q(z|x_n), the aggregate posterior over these N images):

    - rate = (1/N) sum_n KL(q(z|x_n) || p(z)), the posterior's closed-form KL (the ELBO's KL term).
    - marginal KL = KL(q(z) || p(z)) (Hoffman & Johnson 2016, eq. 3), Monte Carlo: ``n_samples`` draws
      z ~ q(z|x_n) per image (a torch.Generator seeded with ``seed``), log q(z) from the dense
      logsumexp over all N posteriors (``aggregate_log_prob``), marginal KL ~= mean(log q(z) - log p(z)).
    - mutual information I(x; z) = rate - marginal KL (Hoffman & Johnson 2016, eq. 2-3 "ELBO surgery").
      Since x is uniform on N images, I(x; z) <= H(x) = log N: with N test images the estimate saturates
      at log N (up to Monte Carlo error) however informative the code is.
    - active units (Burda et al. 2016, Section 5.2): unit u is active if
      A_u = Cov_x(E_{q(z|x)}[z_u]) > ``threshold`` (0.01); A_u is the sample variance (N - 1 denominator)
      over the N images of the posterior mean's u-th coordinate.

    Runs under torch.no_grad with the model in eval mode (its previous train/eval mode is restored).
    Deterministic given ``seed`` and ``batch_size`` (the noise is drawn per encoder batch); independent of
    ``chunk`` up to float rounding. Cost: N^2 * n_samples * d posterior evaluations (N = 1000, d = 20:
    well under a second on CPU); memory ~ chunk * batch_size * d elements.

    Args:
        model: a VAE (uses ``model.encode(x) -> posterior`` on data-space x); anything with ``encode`` works.
        x: (N, C, H, W) test images in the model's data space (``model.preprocess_fixed``), N >= 2.
        batch_size: images per encoder pass (>= 1).
        n_samples: z samples per image for the marginal-KL estimate (>= 1).
        seed: seed of the sampling generator (a CPU torch.Generator, so results do not depend on the device).
        chunk: samples per block of the dense N x (N * n_samples) log q(z_i | x_m) evaluation (>= 1).
        threshold: active-unit threshold on A_u.
    Returns:
        (scalars, arrays):
        scalars (JSON-serialisable): 'rate_nats', 'marginal_kl_nats', 'mutual_info_nats' (floats, nats per
            image), 'active_units' (int), 'n_images' (N), 'latent_dim' (d), 'n_samples', 'log_n_nats'
            (log N, the upper bound of the MI), 'unit_variances' (list of d floats, A_u).
        arrays (float64 CPU tensors): 'rate_per_image' (N,) KL(q(z|x_n) || p(z)) in nats;
            'unit_variances' (d,) A_u; 'log_q_z' and 'log_p_z' (n_samples, N), log q(z) and log p(z) in
            nats at the Monte Carlo samples; 'z' (n_samples, N, d) the samples themselves (z[k, n] ~ q(z|x_n)).
    Raises:
        ValueError: N < 2, batch_size, n_samples or chunk < 1, or a posterior whose shapes do not match.
    """
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
        posteriors, samples = [], []
        for start in range(0, n, batch_size):
            q = model.encode(x[start: start + batch_size])
            if q.mean.dim() != 2 or q.mean.shape[0] != min(batch_size, n - start):
                raise ValueError(f"latent_analysis: posterior mean must be (B, d), got {tuple(q.mean.shape)}")
            posteriors.append(q)
            samples.append(q.rsample(n_samples, generator=gen))               # (S, B, d)
        d = posteriors[0].mean.shape[-1]
        if any(q.mean.shape[-1] != d for q in posteriors):
            raise ValueError("latent_analysis: posterior batches disagree on latent_dim")

        kl = torch.cat([q.kl().double() for q in posteriors]).cpu()           # (N,)
        mu = torch.cat([q.mean.double() for q in posteriors]).cpu()           # (N, d)
        z = torch.cat(samples, dim=1)                                          # (S, N, d)
        log_q_z = aggregate_log_prob(posteriors, z.reshape(-1, d), chunk).reshape(n_samples, n).cpu()
        log_p_z = standard_normal_log_prob(z.double()).cpu()                  # (S, N)
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)

    rate = kl.mean().item()
    marginal_kl = (log_q_z - log_p_z).mean().item()
    unit_var = mu.var(dim=0, unbiased=True)                                    # (d,)
    scalars = {
        "rate_nats": rate,
        "marginal_kl_nats": marginal_kl,
        "mutual_info_nats": rate - marginal_kl,
        "active_units": int((unit_var > threshold).sum().item()),
        "n_images": n,
        "latent_dim": int(d),
        "n_samples": n_samples,
        "log_n_nats": math.log(n),
        "unit_variances": [float(v) for v in unit_var],
    }
    arrays = {"rate_per_image": kl, "unit_variances": unit_var, "log_q_z": log_q_z, "log_p_z": log_p_z,
              "z": z.double().cpu()}
    return scalars, arrays
