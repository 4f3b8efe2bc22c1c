"""A VAE with L >= 2 groups of latents z_1 (next to x) .. z_L (top), inferred top-down (Sønderby et al. 2016, LVAE;
Child 2021, VDVAE; the "minimal faithful version" of docs/methods.md 10.2):

    p(x, z_1..L) = p(z_L) prod_{l<L} p(z_l | z_>l) p(x | z_1..L),   p(z_L) = N(0, I),
                   p(z_l | z_>l) = N(mu_p, diag sigma_p^2), read from the top-down state h_l
    q(z_1..L | x) = q(z_L | x) prod_{l<L} q(z_l | x, z_>l),   each an object of the model's posterior family,
                   read from h_l and the bottom-up feature map a_l of x.

One deterministic top-down state h is shared by inference and generation: it starts from a learned tensor, and
layer l (top first) enters it at its resolution, reads the prior and posterior heads, and merges the drawn z_l
back into it; the decoder maps the final state to p(x | .). Given z_>l, q(z_l | .) and p(z_l | .) condition on the
same state, so the per-layer KL(q(z_l | x, z_>l) || p(z_l | z_>l)) in closed form at the sampled z_>l is an
unbiased estimate of that layer's term of the ELBO (methods.md 10.2); L_k uses sampled log-densities. All
quantities are per image, in nats."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from vaebench.vae.functional import randn, standard_normal_log_prob
from vaebench.vae.likelihoods import Likelihood
from vaebench.vae.model import VAE
from vaebench.vae.objectives import Objective
from vaebench.vae.posteriors.diagonal import DiagonalGaussian

ROWS_PER_PASS = 4096


def in_blocks(n: int, fn, device: torch.device) -> torch.Tensor:
    """``fn(rows)`` over the row indices 0..n-1, ``ROWS_PER_PASS`` at a time (int64 index tensors on ``device``),
    concatenated."""
    return torch.cat([fn(torch.arange(start, min(start + ROWS_PER_PASS, n), device=device))
                      for start in range(0, n, ROWS_PER_PASS)])


class TopDownPath:
    """One descent through the layers (``TopDownVAE.descend``): per layer l = 1..L (bottom first) the drawn
    z_l (N, d_l), the posterior q_l (None without data) and the conditional prior p_l (a ``DiagonalGaussian``;
    None for the top layer, whose prior is N(0, I)); ``h`` the final top-down state (N, ...)."""

    def __init__(self, zs: list, qs: list, ps: list, h: torch.Tensor):
        self.zs, self.qs, self.ps, self.h = zs, qs, ps, h

    def log_q(self) -> list[torch.Tensor]:
        """[log q(z_l | x, z_>l)] at the drawn z_l, each (N,) nats."""
        return [q.log_prob(z) for q, z in zip(self.qs, self.zs)]

    def log_p(self) -> list[torch.Tensor]:
        """[log p(z_l | z_>l) for l < L, log N(z_L; 0, I)] at the drawn z_l, each (N,) nats."""
        return [standard_normal_log_prob(z) if p is None else p.log_prob(z) for p, z in zip(self.ps, self.zs)]

    def kl(self) -> list[torch.Tensor]:
        """[KL(q(z_l | x, z_>l) || p(z_l | z_>l))] in closed form at the drawn parents, each (N,) nats."""
        return [q.kl() if p is None else q.kl_to_diagonal(p.mu, p.logvar) for q, p in zip(self.qs, self.ps)]


def _repeat(features: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Each (B, ...) -> (k B, ...), sample-major (row i k-th copy of image i mod B)."""
    return [a.unsqueeze(0).expand(k, *a.shape).reshape(k * a.shape[0], *a.shape[1:]) for a in features]


class TopDownPosterior:
    """q(z_1..L | x) of a batch of B images, from their bottom-up feature maps. A point is the concatenated path
    z = [z_1, .., z_L] (..., D), D = sum ``layer_dims``; every method runs the model's top-down pass.

    ``mean`` is the path of posterior means m_L = E[z_L | x], m_l = mean of q(z_l | x, z_>l = m_>l): for l < L a
    plug-in value, not E_q[z_l]."""

    def __init__(self, model: "TopDownVAE", features: list[torch.Tensor]):
        self.model, self.features = model, features
        self.layer_dims = model.layer_dims
        self.batch = int(features[0].shape[0])
        self._mean: torch.Tensor | None = None

    @property
    def latent_dim(self) -> int:
        """D, the size of the concatenated latent path."""
        return sum(self.layer_dims)

    @property
    def mean(self) -> torch.Tensor:
        """The concatenated path of posterior means, (B, D)."""
        if self._mean is None:
            path = self.model.descend(self.features, self.batch, lambda q, p: q.mean)
            self._mean = torch.cat(path.zs, dim=-1)
        return self._mean

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(..., D) -> [z_1 (..., d_1), .., z_L (..., d_L)]. Raises ValueError if the last dim is not D."""
        return self.model.split(z)

    def path(self, k: int | None = None, generator: torch.Generator | None = None) -> TopDownPath:
        """A reparameterised draw of the path, z_l ~ q(z_l | x, z_>l) top-down, with N = B rows, or k B rows
        (sample-major) when k is given."""
        features = self.features if k is None else _repeat(self.features, int(k))
        n = self.batch if k is None else int(k) * self.batch
        return self.model.descend(features, n, lambda q, p: q.rsample(None, generator=generator))

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The concatenated path: (B, D) if k is None, else (k, B, D)."""
        z = torch.cat(self.path(k, generator).zs, dim=-1)
        return z if k is None else z.view(int(k), self.batch, -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_1..L | x) = sum_l log q(z_l | x, z_>l) at z (..., B or 1, D) against this batch's images, the
        leading dims broadcasting as ``Posterior.log_prob``'s (points (M, 1, D) -> (M, B)); nats. Runs the top-down
        pass once per (point, image) pair, ``ROWS_PER_PASS`` pairs at a time. Raises ValueError for a wrong D."""
        self.split(z)
        lead = torch.broadcast_shapes(z.shape[:-1], (self.batch,))
        flat = z.expand(*lead, z.shape[-1]).reshape(-1, z.shape[-1])

        def log_q(rows: torch.Tensor) -> torch.Tensor:
            features = [a[rows % self.batch] for a in self.features]
            return sum(self.model.descend(features, len(rows), self.model.given(self.split(flat[rows]))).log_q())

        return in_blocks(flat.shape[0], log_q, flat.device).view(lead)

    def kl_layers(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per layer, KL(q(z_l | x, z_>l) || p(z_l | z_>l)) in closed form at one drawn path, [(B,)] nats, bottom
        first; the path drawn with ``generator``, or if None with a CPU generator seeded 0 (a function of x)."""
        path = self.path(None, torch.Generator().manual_seed(0) if generator is None else generator)
        return path.kl()

    def kl(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-path estimate of KL(q(z | x) || p(z)), the sum of ``kl_layers``: (B,) nats."""
        return sum(self.kl_layers(generator))


class TopDownVAE(VAE):
    """A top-down hierarchical VAE (module docstring) with latent groups of shapes ``z_shapes`` = [(c_l, h_l, w_l)],
    bottom (next to x) first; ``latent_dim`` is D = sum c_l h_l w_l, the size of the concatenated path (each group
    flattened channel-major) that 'z', ``encode(x).mean`` and the latent analysis see.

    Networks: ``bottom_up`` x (B, C, H, W) in [0, 1] -> [a_1, .., a_L] (feature maps, bottom first); ``start(n)``
    the initial top-down state for n rows; ``layers[l]`` (bottom first) with ``enter(h)`` (to the layer's
    resolution), ``prior_head(h)`` -> (N, 2 d_l) = [mu, log sigma^2] of p(z_l | z_>l) (unused for the top layer),
    ``posterior_head(h, a_l)`` -> (N, posterior.head_dim(d_l)) and ``merge(h, z_l)`` -> the next state;
    ``decoder`` the final state -> (N, likelihood.out_channels*C, H, W). Raises ValueError for fewer than two
    groups or a layer list of another length.

    Terms of ``forward_terms`` (S = (B,) or (k, B)): 'log_px' = log p(x | z) at the sampled path; 'kl' = sum_l of
    the closed-form per-layer KL at the sampled parents (averaged over the k paths when k is given), so
    log_px - kl is an unbiased single-sample ELBO; 'kl_layers' [(B,)] those per-layer terms; 'log_w' (k, B) =
    log p(x | z) + sum_l [log p(z_l | z_>l) - log q(z_l | x, z_>l)] at the same sampled path (Burda et al. 2016,
    eq. 8), 'z' the concatenated path (*S, D)."""

    def __init__(self, bottom_up: nn.Module, start: nn.Module, layers: nn.ModuleList, decoder: nn.Module,
                 posterior: type, likelihood: Likelihood, objective: Objective,
                 z_shapes: list[tuple[int, int, int]], image_shape: tuple[int, int, int]):
        z_shapes = [tuple(int(s) for s in shape) for shape in z_shapes]
        if len(z_shapes) < 2:
            raise ValueError(f"z_shapes: a top-down hierarchical VAE needs >= 2 latent groups, got {z_shapes}")
        if len(layers) != len(z_shapes):
            raise ValueError(f"layers: need one per latent group ({len(z_shapes)}), got {len(layers)}")
        self_layer_dims = tuple(math.prod(s) for s in z_shapes)
        super().__init__(None, decoder, posterior, likelihood, objective, sum(self_layer_dims), image_shape)
        self.bottom_up, self.start, self.layers = bottom_up, start, layers
        self.z_shapes, self.layer_dims = z_shapes, self_layer_dims

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(..., D) -> [z_1 (..., d_1), .., z_L (..., d_L)]. Raises ValueError if the last dim is not D."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"expected a latent path of size {self.latent_dim} = sum {list(self.layer_dims)}, "
                             f"got {tuple(z.shape)}")
        return list(z.split(list(self.layer_dims), dim=-1))

    @staticmethod
    def given(zs: list[torch.Tensor]):
        """A ``descend`` draw rule that takes layer l's z from ``zs`` (bottom first, each (N, d_l))."""
        it = iter(reversed(zs))
        return lambda q, p: next(it)

    def descend(self, features: list[torch.Tensor] | None, n: int, draw) -> TopDownPath:
        """The top-down pass for n rows: for l = L..1, h <- enter(h); p_l from h (top: N(0, I), None); q_l from h
        and ``features[l]`` (None without features); z_l = draw(q_l, p_l) (N, d_l); h <- merge(h, z_l)."""
        h = self.start(int(n))
        zs, qs, ps = [None] * len(self.layers), [None] * len(self.layers), [None] * len(self.layers)
        for level in reversed(range(len(self.layers))):
            layer, d = self.layers[level], self.layer_dims[level]
            h = layer.enter(h)
            p = None if level == len(self.layers) - 1 else DiagonalGaussian.from_head(layer.prior_head(h), d)
            q = None if features is None else self.posterior.from_head(layer.posterior_head(h, features[level]), d)
            z = draw(q, p)
            h = layer.merge(h, z)
            zs[level], qs[level], ps[level] = z, q, p
        return TopDownPath(zs, qs, ps, h)

    def encode(self, x: torch.Tensor) -> TopDownPosterior:
        """q(z_1..L | x) for data-space x (B, C, H, W)."""
        return TopDownPosterior(self, list(self.bottom_up(self.likelihood.to_unit(x))))

    def decode_state(self, h: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Raw decoder output of the final state h (N, ...) -> (*lead, out_channels*C, H, W), N = prod lead."""
        out = self.decoder(h)
        return out.view(*lead, *out.shape[1:])

    def forward_terms(self, x: torch.Tensor, k: int | None = None, need_sse: bool = False, need_z: bool = False,
                      accumulate: bool = False, generator: torch.Generator | None = None,
                      x_uint8: torch.Tensor | None = None) -> dict:
        """Per-image terms as ``VAE.forward_terms`` (class docstring), nats, S = (B,) if k is None else (k, B):
        'log_px' S, 'kl' (B,), 'kl_layers' [(B,)], 'log_w' (k, B), 'sse' S, 'z' (*S, D); with ``x_uint8`` also
        'extra_log_px' {column: S} and 'extra_log_w' {column: (k, B)}."""
        q = self.encode(x)
        path = q.path(k, generator)
        lead = torch.Size((q.batch,) if k is None else (int(k), q.batch))
        out = self.decode_state(path.h, lead)
        kl_layers = [v.view(lead) if k is None else v.view(lead).mean(0) for v in path.kl()]
        log_prior_ratio = None if k is None else (sum(path.log_p()) - sum(path.log_q())).view(lead)
        z = torch.cat(path.zs, dim=-1).view(*lead, -1) if need_z else None
        terms = self.assemble_terms(x, out, sum(kl_layers), log_prior_ratio, z, need_sse, accumulate, x_uint8)
        terms["kl_layers"] = kl_layers
        return terms

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_1..L) = log N(z_L; 0, I) + sum_{l<L} log p(z_l | z_>l) of concatenated paths z (..., D) -> (...),
        ``ROWS_PER_PASS`` rows at a time; nats. Raises ValueError if the last dim is not D."""
        self.split(z)
        flat = z.reshape(-1, z.shape[-1])

        def log_p(rows: torch.Tensor) -> torch.Tensor:
            return sum(self.descend(None, len(rows), self.given(self.split(flat[rows]))).log_p())

        return in_blocks(flat.shape[0], log_p, flat.device).view(z.shape[:-1])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, draw: bool = False,
               latent_means: bool = False) -> torch.Tensor | None:
        """Ancestral samples, (n, C, H, W) in [0, 1]: z_L ~ N(0, I), then z_l ~ p(z_l | z_>l) (its mean with
        ``latent_means``), and the decoder mean at the final state, or with ``draw`` x ~ p(x | z) (None when the
        likelihood cannot be sampled without data)."""
        ref = next(self.parameters())

        def prior_draw(q, p):
            if p is None:
                return randn((int(n), self.layer_dims[-1]), ref, generator)
            return p.mean if latent_means else p.rsample(None, generator=generator)

        path = self.descend(None, int(n), prior_draw)
        out = self.decode_state(path.h, torch.Size((int(n),)))
        return self.likelihood.draw(out, generator) if draw else self.likelihood.mean(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the path of posterior means (``TopDownPosterior.mean``): data-space x (B, C, H, W) ->
        (B, C, H, W) float in [0, 1]."""
        q = self.encode(x)
        path = self.descend(q.features, q.batch, lambda q_l, p_l: q_l.mean)
        return self.likelihood.mean(self.decode_state(path.h, torch.Size((q.batch,))))
