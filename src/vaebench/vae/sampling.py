"""Prior samples of a trained VAE, decoded in batches from one seeded generator."""
from __future__ import annotations

import torch


@torch.no_grad()
def prior_samples(model, n: int, seed: int, batch_size: int, draw: bool = False) -> torch.Tensor | None:
    """The ``n`` prior samples FID is computed on: (n, C, H, W) float in [0, 1], z ~ N(0, I) from a CPU
    generator seeded with ``seed``, decoded ``batch_size`` at a time; decoder means, or draws x ~ p(x|z)
    with ``draw`` (None when the likelihood cannot be sampled without data)."""
    g = torch.Generator().manual_seed(int(seed))
    parts = [model.sample(min(batch_size, n - i), generator=g, draw=draw) for i in range(0, n, batch_size)]
    return None if parts[0] is None else torch.cat(parts)
