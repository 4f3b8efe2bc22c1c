"""SVG-LP, a sequence VAE with a learned prior (Denton & Fergus 2018, "Stochastic Video Generation with a Learned
Prior", Section 3; docs/methods.md 11.1), for videos x_0 .. x_{T-1}:

    p(x_1..T-1, z_1..T-1 | x_0) = prod_t p(z_t | x_<t) p(x_t | x_<t, z_<=t),
    q(z_1..T-1 | x) = prod_t q(z_t | x_<=t),   q and p(z_t | x_<t) diagonal Gaussians from LSTMs,
    g_t = LSTM_theta([E(x_{t-1}), z_t]),   p(x_t | .) = the likelihood at D(g_t, skips of x_s(t)),

with s(t) = t - 1 for t < n_past and n_past - 2 after (svg-code's skip rule; every step with
``last_frame_skip``). Training is teacher-forced: the encoder E sees the true previous frame. Frame x_0 is only
conditioned on, so a sequence of T frames has T - 1 scored frames. The ELBO is sum_t E_q log p(x_t | .) - KL(q(z_t
| x_<=t) || p(z_t | x_<t)), each KL in closed form (the prior depends on x only, not on z_<t, so the sum is exact);
L_k weighs whole paths z_1..T-1 ~ q. Any registered likelihood scores the frames unchanged: its per-image sigma is
a per-frame sigma. Terms are per sequence, in nats."""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.vae.likelihoods import Likelihood
from vaebench.vae.model import VAE
from vaebench.vae.objectives import Objective
from vaebench.vae.posteriors.diagonal import DiagonalGaussian


def check_sequence_uint8(x_uint8: torch.Tensor) -> None:
    """Raise ValueError unless ``x_uint8`` is a (B, T, C, H, W) uint8 tensor with T >= 2."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 5 or x_uint8.shape[1] < 2:
        raise ValueError(f"a sequence model expects (B, T, C, H, W) uint8 videos with T >= 2, got {x_uint8.dtype} "
                         f"{tuple(x_uint8.shape)}")


class SVGLP(VAE):
    """SVG-LP. ``encoder``: frames (N, C, H, W) in [0, 1] -> (h (N, g), skips); ``decoder``: (g (N, g), skips) ->
    (N, out_channels*C, H, W); ``predictor``, ``posterior_rnn``, ``prior_rnn``: ``LSTMStack``s with 1, 2 and 2
    heads; ``image_shape`` is the frame shape (C, H, W)."""

    sequence = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, predictor: nn.Module, posterior_rnn: nn.Module,
                 prior_rnn: nn.Module, likelihood: Likelihood, objective: Objective, latent_dim: int,
                 image_shape: tuple[int, int, int], n_past: int, last_frame_skip: bool = False):
        super().__init__(encoder, decoder, DiagonalGaussian, likelihood, objective, latent_dim, image_shape)
        self.predictor, self.posterior_rnn, self.prior_rnn = predictor, posterior_rnn, prior_rnn
        self.n_past, self.last_frame_skip = int(n_past), bool(last_frame_skip)

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, T, C, H, W) -> the likelihood's data space, frame by frame. Raises ValueError for another
        shape or dtype."""
        check_sequence_uint8(x_uint8)
        return self.likelihood.preprocess(x_uint8.flatten(0, 1), generator).view(x_uint8.shape)

    def skip_index(self, t: int) -> int:
        """The frame whose skips feed the decoder at step t >= 1 (0-based): t - 1 while t < n_past (or always with
        ``last_frame_skip``), else n_past - 2."""
        return t - 1 if self.last_frame_skip or t < self.n_past else self.n_past - 2

    def encode_frames(self, u: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frames u (B, T, C, H, W) in [0, 1] -> (h (B, T, g), skips [(B, T, c_i, h_i, w_i)]), one encoder call per
        time step, so that in training BatchNorm's statistics are those of one time step's frames, as in
        svg-code (a call over all B T frames would let later frames shift the normalisation of earlier ones)."""
        steps = [self.encoder(u[:, t]) for t in range(u.shape[1])]
        return (torch.stack([h for h, _ in steps], 1),
                [torch.stack(level, 1) for level in zip(*(skips for _, skips in steps))])

    def posterior_and_prior(self, h: torch.Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """q(z_t | x_<=t) and p(z_t | x_<t) for t = 1..T-1 from frame encodings h (B, T, g), as diagonal Gaussians
        over rows (B (T-1), d), sequence-major."""
        mu_q, logvar_q = self.posterior_rnn(h[:, 1:])
        mu_p, logvar_p = self.prior_rnn(h[:, :-1])
        d = self.latent_dim
        return (DiagonalGaussian(mu_q.reshape(-1, d), logvar_q.reshape(-1, d)),
                DiagonalGaussian(mu_p.reshape(-1, d), logvar_p.reshape(-1, d)))

    def decode_path(self, h: torch.Tensor, skips: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced raw decoder outputs for z (K, B, T-1, d) given the encodings (B, T, g) and skips:
        (K, B (T-1), out_channels*C, H, W)."""
        k, b, steps = z.shape[:3]
        h_prev = h[:, :-1].unsqueeze(0).expand(k, -1, -1, -1)
        (g,) = self.predictor(torch.cat([h_prev, z], -1).flatten(0, 1))          # (K B, T-1, g)
        outs = []
        for t in range(1, steps + 1):                  # one decoder call per time step (BatchNorm: as encode_frames)
            skip = [s[:, self.skip_index(t)].unsqueeze(0).expand(k, *s[:, 0].shape).flatten(0, 1) for s in skips]
            out = self.decoder(g[:, t - 1], skip)
            outs.append(out.view(k, b, *out.shape[1:]))
        return torch.stack(outs, 2).flatten(1, 2)

    def forward_terms(self, x: torch.Tensor, k: int | None = None, need_sse: bool = False, need_z: bool = False,
                      accumulate: bool = False, generator: torch.Generator | None = None,
                      x_uint8: torch.Tensor | None = None) -> dict:
        """Per-sequence terms, nats, S = (B,) if k is None else (k, B), for data-space x (B, T, C, H, W): 'log_px'
        S (sum over the T - 1 scored frames), 'kl' (B,) (sum of the closed-form per-frame KLs to the learned
        prior), 'log_w' (k, B), 'sse' S, 'z' (*S, (T-1) d); with ``x_uint8`` also 'extra_log_px' and
        'extra_log_w'."""
        b, t = x.shape[:2]
        h, skips = self.encode_frames(self.likelihood.to_unit(x))
        q, p = self.posterior_and_prior(h)
        z = q.rsample(k, generator=generator)                              # (*S', B (T-1), d)
        out = self.decode_path(h, skips, z.reshape(k or 1, b, t - 1, self.latent_dim))
        if k is None:
            out = out[0]
        frames = x[:, 1:].flatten(0, 1)

        def per_sequence(v: torch.Tensor) -> torch.Tensor:
            return v.reshape(*v.shape[:-1], b, t - 1).sum(-1)

        terms = {"log_px": per_sequence(self.likelihood.log_prob(frames, out, accumulate=accumulate)),
                 "kl": per_sequence(q.kl_to_diagonal(p.mu, p.logvar))}
        if x_uint8 is not None:
            extra = self.likelihood.extra_log_probs(frames, x_uint8[:, 1:].flatten(0, 1), out)
            terms["extra_log_px"] = {c: per_sequence(v) for c, v in extra.items()}
        if k is not None:
            log_prior_ratio = per_sequence(p.log_prob(z) - q.log_prob(z))
            terms["log_w"] = terms["log_px"] + log_prior_ratio
            if x_uint8 is not None:
                terms["extra_log_w"] = {c: v + log_prior_ratio for c, v in terms["extra_log_px"].items()}
        if need_sse:
            sq = (self.likelihood.to_unit(frames) - self.likelihood.mean(out)).pow(2).sum((-3, -2, -1))
            terms["sse"] = per_sequence(sq)
        if need_z:
            terms["z"] = z.reshape(*z.shape[:-2], b, (t - 1) * self.latent_dim)
        return terms

    def encode(self, x: torch.Tensor):
        """Not defined for a sequence model (one q per frame, conditioned on the past): raises NotImplementedError."""
        raise NotImplementedError("SVG-LP has a posterior per frame (posterior_and_prior), not one q(z|x)")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, draw: bool = False) -> None:
        """None: SVG-LP generates continuations of conditioning frames (``predict``), not unconditional samples."""
        return None

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced predictions at the posterior means: data-space x (B, T, C, H, W) -> decoder means of
        frames 1..T-1, (B, T-1, C, H, W) float in [0, 1]."""
        b, t = x.shape[:2]
        h, skips = self.encode_frames(self.likelihood.to_unit(x))
        q, _ = self.posterior_and_prior(h)
        out = self.decode_path(h, skips, q.mean.view(1, b, t - 1, self.latent_dim))[0]
        return self.likelihood.mean(out).view(b, t - 1, *self.image_shape)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, n_future: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Continuations of the first ``n_past`` frames of data-space x (B, >= n_past, C, H, W): for t < n_past
        z_t ~ q(z_t | x_<=t) and the true frame is kept (svg-code's generation); then z_t ~ p(z_t | x_<t), the
        decoder mean is the frame and is fed back. Returns the ``n_future`` predicted frames (B, n_future, C, H,
        W) in [0, 1]. Raises ValueError for fewer than n_past frames or n_future < 1."""
        if x.shape[1] < self.n_past or int(n_future) < 1:
            raise ValueError(f"predict: need >= n_past={self.n_past} conditioning frames and n_future >= 1, got "
                             f"{x.shape[1]} frames and n_future={n_future!r}")
        u = self.likelihood.to_unit(x[:, :self.n_past])
        states = {"posterior": None, "prior": None, "predictor": None}
        frame, skip, predicted = u[:, 0], None, []
        for t in range(1, self.n_past + int(n_future)):
            h, skips = self.encoder(frame)
            if self.last_frame_skip or t < self.n_past:
                skip = skips
            (mu_p, logvar_p), states["prior"] = self.prior_rnn.step(h, states["prior"])
            if t < self.n_past:
                (mu, logvar), states["posterior"] = self.posterior_rnn.step(self.encoder(u[:, t])[0],
                                                                            states["posterior"])
            else:
                mu, logvar = mu_p, logvar_p
            z = DiagonalGaussian(mu, logvar).rsample(generator=generator)
            (g,), states["predictor"] = self.predictor.step(torch.cat([h, z], -1), states["predictor"])
            if t < self.n_past:
                frame = u[:, t]
            else:
                frame = self.likelihood.mean(self.decoder(g, skip))
                predicted.append(frame)
        return torch.stack(predicted, 1)
