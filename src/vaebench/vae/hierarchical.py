"""A VAE with L >= 2 stochastic layers h_1 (next to x) .. h_L (top), inferred bottom-up (Burda, Grosse,
Salakhutdinov 2016, the two-stochastic-layer models; code: github.com/yburda/iwae, iwae.py):

    p(x, h_1..h_L) = p(h_L) prod_{l<L} p(h_l | h_{l+1}) p(x | h_1),   p(h_L) = N(0, I),
                     p(h_l | h_{l+1}) = N(mu_p, diag sigma_p^2) (a diagonal Gaussian, whatever the posterior family)
    q(h_1..h_L | x) = q(h_1 | x) prod_{l>1} q(h_l | h_{l-1}),   each q(h_l | .) one object of the model's posterior
                     family (posteriors/: diagonal or AR(1)).

All quantities are per image, in nats."""
from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.vae.functional import randn, standard_normal_log_prob
from vaebench.vae.likelihoods import Likelihood
from vaebench.vae.model import VAE
from vaebench.vae.objectives import Objective
from vaebench.vae.posteriors.diagonal import DiagonalGaussian


def _flat(h: torch.Tensor) -> torch.Tensor:
    """(*S, d) -> (prod S, d)."""
    return h.reshape(-1, h.shape[-1])


class HierarchicalPosterior:
    """q(h_1..h_L | x) of a batch of B images: q(h_1 | x) (``first``, a posterior object (B, d_1)) and the networks
    of q(h_l | h_{l-1}), l = 2..L (``model.up``). A point is the concatenation h = [h_1, .., h_L], (..., D) with
    D = sum ``layer_dims``.

    ``mean`` is the path of posterior means m_1 = E[h_1 | x], m_l = mean of q(h_l | h_{l-1} = m_{l-1}): for l >= 2 a
    plug-in value, not E_q[h_l] (which averages over h_{l-1})."""

    def __init__(self, model: "HierarchicalVAE", first):
        self.model, self.first = model, first
        self.layer_dims = model.layer_dims
        self._mean: torch.Tensor | None = None

    def conditional(self, level: int, h_below: torch.Tensor):
        """q(h_{level+1} | h_level) for level = 1..L-1: h_below = h_level (N, d_level) -> a posterior object with
        N rows."""
        return self.model.posterior.from_head(self.model.up[level - 1](h_below), self.layer_dims[level])

    def path(self, k: int | None = None, generator: torch.Generator | None = None) -> tuple[list, list]:
        """A reparameterised draw h_l ~ q(h_l | h_{l-1}), bottom-up: ([h_1, .., h_L], [q_1, .., q_L]). h_l is (*S, d_l),
        S = (B,) if k is None else (k, B); q_1 has B rows, q_l (l >= 2) prod S rows (conditioned on the flattened
        h_{l-1})."""
        hs, qs = [self.first.rsample(k, generator=generator)], [self.first]
        lead = hs[0].shape[:-1]
        for level in range(1, len(self.layer_dims)):
            q = self.conditional(level, _flat(hs[-1]))
            qs.append(q)
            hs.append(q.rsample(None, generator=generator).reshape(*lead, self.layer_dims[level]))
        return hs, qs

    @property
    def mean(self) -> torch.Tensor:
        """The concatenated path of posterior means [m_1, .., m_L], (B, D)."""
        if self._mean is None:
            means = [self.first.mean]
            for level in range(1, len(self.layer_dims)):
                means.append(self.conditional(level, means[-1]).mean)
            self._mean = torch.cat(means, dim=-1)
        return self._mean

    @property
    def latent_dim(self) -> int:
        """D, the size of the concatenated latent path."""
        return sum(self.layer_dims)

    def split(self, h: torch.Tensor) -> list[torch.Tensor]:
        """(..., D) -> [h_1 (..., d_1), .., h_L (..., d_L)]. Raises ValueError if the last dim is not D."""
        if h.shape[-1] != self.latent_dim:
            raise ValueError(f"expected a latent path of size {self.latent_dim} = sum {list(self.layer_dims)}, "
                             f"got {tuple(h.shape)}")
        return list(h.split(list(self.layer_dims), dim=-1))

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw of the whole path, concatenated: (B, D) if k is None, else (k, B, D)."""
        return torch.cat(self.path(k, generator)[0], dim=-1)

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """log q(h_1..h_L | x) = log q(h_1 | x) + sum_{l>1} log q(h_l | h_{l-1}) at h (..., B, D), leading dims
        broadcasting against the batch as ``Posterior.log_prob`` does: -> (..., B); nats."""
        hs = self.split(h)
        total = self.first.log_prob(hs[0])
        for level in range(1, len(hs)):
            below = hs[level - 1]
            lp = self.conditional(level, _flat(below)).log_prob(_flat(hs[level]))
            total = total + lp.reshape(below.shape[:-1])
        return total

    def kl_layers(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The per-layer terms of ``HierarchicalVAE.path_kl`` at one drawn path, bottom first, each (B,) nats:
        log q(h_l | h_{l-1}) - log p(h_l | h_{l+1}) for l < L (single sample), KL(q(h_L | h_{L-1}) || N(0, I)) in
        closed form; the path drawn with ``generator``, or if None with a CPU generator seeded 0 (a function of x)."""
        hs, qs = self.path(None, torch.Generator().manual_seed(0) if generator is None else generator)
        log_q, log_p = self.model.path_log_probs(hs, qs)
        return [lq - lp for lq, lp in zip(log_q[:-1], log_p[:-1])] + [qs[-1].kl()]

    def kl(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-path estimate of KL(q(h | x) || p(h)), (B,) nats, the sum of ``kl_layers`` (``HierarchicalVAE.path_kl``):
        a random quantity, its path drawn with ``generator``, or if None with a CPU generator seeded 0."""
        return sum(self.kl_layers(generator))


class HierarchicalVAE(VAE):
    """A VAE with stochastic layers of sizes ``layer_dims`` = (d_1, .., d_L), L >= 2, bottom (next to x) first;
    ``latent_dim`` is D = sum ``layer_dims``, the size of the concatenated latent path h = [h_1, .., h_L] that
    'z', ``encode(x).mean`` and the latent analysis see; the N(0, I) prior is on h_L alone (module docstring).

    Networks: ``encoder`` x (B, C, H, W) in [0, 1] -> (B, posterior.head_dim(d_1)); ``up[l-1]`` h_l (N, d_l) ->
    (N, posterior.head_dim(d_{l+1})); ``down[l-1]`` h_{l+1} (N, d_{l+1}) -> (N, 2 d_l) = [mu, log sigma^2] of
    p(h_l | h_{l+1}); ``decoder`` h_1 (N, d_1) -> (N, likelihood.out_channels*C, H, W). Raises ValueError for
    fewer than two layers or mismatched network lists.

    Terms of ``forward_terms`` (S = (B,) or (k, B)): 'log_px' = log p(x | h_1) at the sampled h_1; 'kl' =
    ``path_kl``, the KL of the whole latent path (averaged over the k paths when k is given), so that
    log_px - kl is an unbiased single-sample ELBO estimate; 'log_w' (k, B) = log p(x | h_1) + log p(h_L)
    + sum_{l<L} log p(h_l | h_{l+1}) - sum_l log q(h_l | .) at the same sampled path (Burda et al. 2016, eq. 8;
    yburda/iwae ``log_weightsIq_samples``), so mean_i log w_i estimates the ELBO and L_k = log mean_i w_i >= it in
    expectation; 'z' the concatenated path (*S, D)."""

    def __init__(self, encoder: nn.Module, up: nn.ModuleList, down: nn.ModuleList, decoder: nn.Module,
                 posterior: type, likelihood: Likelihood, objective: Objective, layer_dims: tuple[int, ...],
                 image_shape: tuple[int, int, int]):
        layer_dims = tuple(int(d) for d in layer_dims)
        if len(layer_dims) < 2:
            raise ValueError(f"layer_dims: a hierarchical VAE needs >= 2 stochastic layers, got {list(layer_dims)}")
        if len(up) != len(layer_dims) - 1 or len(down) != len(layer_dims) - 1:
            raise ValueError(f"up and down need {len(layer_dims) - 1} networks each for layer_dims "
                             f"{list(layer_dims)}, got {len(up)} and {len(down)}")
        super().__init__(encoder, decoder, posterior, likelihood, objective, sum(layer_dims), image_shape)
        self.up, self.down = up, down
        self.layer_dims = layer_dims

    def encode(self, x: torch.Tensor) -> HierarchicalPosterior:
        """q(h_1..h_L | x) for data-space x (B, C, H, W)."""
        first = self.posterior.from_head(self.encoder(self.likelihood.to_unit(x)), self.layer_dims[0])
        return HierarchicalPosterior(self, first)

    def decode(self, h1: torch.Tensor) -> torch.Tensor:
        """Raw decoder output of p(x | h_1) for h_1 (*S, d_1) -> (*S, out_channels*C, H, W)."""
        out = self.decoder(h1.reshape(-1, self.layer_dims[0]))
        return out.view(*h1.shape[:-1], *out.shape[1:])

    def conditional_prior(self, level: int, h_above: torch.Tensor) -> DiagonalGaussian:
        """p(h_{level+1} | h_{level+2}) for level = 0..L-2: h_above = h_{level+2} (N, d_{level+2}) ->
        N(mu, diag exp(logvar)) with N rows."""
        return DiagonalGaussian.from_head(self.down[level](h_above), self.layer_dims[level])

    def path_log_probs(self, hs: list[torch.Tensor], qs: list) -> tuple[list, list]:
        """Per layer, at the path ``hs`` (each (*S, d_l)) drawn with the posteriors ``qs``
        (``HierarchicalPosterior.path``): ([log q(h_l | .)], [log p(h_l | h_{l+1}) for l < L, then log N(h_L; 0, I)]),
        each (*S,); nats."""
        lead = hs[0].shape[:-1]
        log_q = [qs[0].log_prob(hs[0])] + [q.log_prob(_flat(h)).reshape(lead) for q, h in zip(qs[1:], hs[1:])]
        log_p = [self.conditional_prior(level, _flat(hs[level + 1])).log_prob(_flat(hs[level])).reshape(lead)
                 for level in range(len(hs) - 1)]
        return log_q, log_p + [standard_normal_log_prob(hs[-1])]

    def path_kl(self, hs: list[torch.Tensor], qs: list) -> torch.Tensor:
        """Unbiased one-path estimate of KL(q(h_1..h_L | x) || p(h_1..h_L)) = E_q[log q - log p], (*S,) nats:

            KL(q(h_L | h_{L-1}) || N(0, I))  (closed form at the sampled h_{L-1}: the posterior's ``kl``)
            + sum_{l<L} [log q(h_l | h_{l-1}) - log p(h_l | h_{l+1})]   (single sample, as yburda/iwae)

        The lower layers use the sampled log-densities because h_{l+1} ~ q(h_{l+1} | h_l) depends on h_l (bottom-up
        inference): E_q[log q(h_l|.) - log p(h_l|h_{l+1})] is not E[KL(q(h_l|.) || p(h_l|h_{l+1}))], so the analytic
        per-layer Gaussian KL would bias the ELBO here. A single image's value can be negative."""
        return self._path_kl(*self.path_log_probs(hs, qs), qs[-1], hs[0].shape[:-1])

    @staticmethod
    def _path_kl(log_q: list, log_p: list, q_top, lead: torch.Size) -> torch.Tensor:
        lower = sum(lq - lp for lq, lp in zip(log_q[:-1], log_p[:-1]))
        return lower + q_top.kl().reshape(lead)

    def prior_log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """log p(h_1..h_L) = log N(h_L; 0, I) + sum_{l<L} log p(h_l | h_{l+1}) of concatenated paths h (..., D) ->
        (...); nats. Raises ValueError if the last dim is not D = sum ``layer_dims``."""
        if h.shape[-1] != sum(self.layer_dims):
            raise ValueError(f"expected a latent path of size {sum(self.layer_dims)}, got {tuple(h.shape)}")
        hs = list(h.split(list(self.layer_dims), dim=-1))
        lead = h.shape[:-1]
        total = standard_normal_log_prob(hs[-1])
        for level in range(len(hs) - 1):
            p = self.conditional_prior(level, _flat(hs[level + 1]))
            total = total + p.log_prob(_flat(hs[level])).reshape(lead)
        return total

    def forward_terms(self, x: torch.Tensor, k: int | None = None, need_sse: bool = False, need_z: bool = False,
                      accumulate: bool = False, generator: torch.Generator | None = None,
                      x_uint8: torch.Tensor | None = None) -> dict:
        """Per-image terms as ``VAE.forward_terms`` (class docstring), nats, S = (B,) if k is None else (k, B):
        'log_px' S, 'kl' (B,), 'log_w' (k, B), 'sse' S, 'z' (*S, D); with ``x_uint8`` also 'extra_log_px'
        {column: S} and 'extra_log_w' {column: (k, B)}."""
        hs, qs = self.encode(x).path(k, generator)
        out = self.decode(hs[0])
        log_q, log_p = self.path_log_probs(hs, qs)
        kl = self._path_kl(log_q, log_p, qs[-1], hs[0].shape[:-1])
        log_prior_ratio = None if k is None else sum(log_p) - sum(log_q)
        return self.assemble_terms(x, out, kl if k is None else kl.mean(0), log_prior_ratio,
                                   torch.cat(hs, dim=-1) if need_z else None, need_sse, accumulate, x_uint8)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, draw: bool = False,
               latent_means: bool = False) -> torch.Tensor | None:
        """Ancestral samples, (n, C, H, W) in [0, 1]: h_L ~ N(0, I), then h_l ~ p(h_l | h_{l+1}) down to h_1 (its mean
        at every lower layer with ``latent_means``), and the decoder mean at h_1, or with ``draw`` x ~ p(x | h_1)
        (None when the likelihood cannot be sampled without data)."""
        ref = next(self.parameters())
        h = randn((int(n), self.layer_dims[-1]), ref, generator)
        for level in reversed(range(len(self.layer_dims) - 1)):
            p = self.conditional_prior(level, h)
            h = p.mean if latent_means else p.rsample(None, generator=generator)
        out = self.decode(h)
        return self.likelihood.draw(out, generator) if draw else self.likelihood.mean(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean of h_1 (the first block of ``encode(x).mean``): data-space x
        (B, C, H, W) -> (B, C, H, W) float in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).first.mean))
