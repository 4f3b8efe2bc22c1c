"""Bernoulli decoder on dynamically binarised images (Burda et al. 2016, Section 5.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vaebench.registry import LIKELIHOODS
from vaebench.vae.functional import rand_like
from vaebench.vae.likelihoods import Likelihood, check_uint8


@LIKELIHOODS.register
class Bernoulli(Likelihood):
    """One logit l per sub-pixel, log p(x|z) = sum [x l - softplus(l)]; data x ~ Bernoulli(x_uint8 / 255),
    float {0., 1.}, redrawn at every ``preprocess``."""

    name = "bernoulli"
    family = "bernoulli"
    data_space = "binarised"
    description = "Bernoulli per pixel on dynamically binarised images"

    def preprocess(self, x_uint8, generator=None):
        check_uint8(x_uint8)
        p = x_uint8.float() / 255.0
        return (rand_like(p, generator) < p).float()

    def log_prob(self, x, out, accumulate=False):
        logits = out
        return (x * logits - F.softplus(logits)).sum((-3, -2, -1))

    def mean(self, out):
        return torch.sigmoid(out)

    def draw(self, out, generator=None):
        p = torch.sigmoid(out)
        return (rand_like(p, generator) < p).to(p.dtype)
