"""Fréchet distances ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2}) (Heusel et al. 2017) in the feature space
of the dataset's ``SmallCNN``; generated images are quantised to uint8 with round(x*255) like the real ones."""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn

from vaebench.metrics.classifier import SmallCNN



def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), float64, of features (N, d); ValueError if N < 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics needs an (N, d) array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), means (d,), covariances (d, d), in float64,
    with Tr((S1 S2)^{1/2}) from the eigenvalues of S1^{1/2} S2 S1^{1/2}. Raises ValueError for inconsistent
    shapes or non-finite values."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    for name, arr, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)),
                             ("sigma2", sigma2, (d, d))):
        if arr.shape != shape:
            raise ValueError(f"frechet_distance: {name} has shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"frechet_distance: {name} contains NaN or inf")
    sym = lambda a: (a + a.T) / 2  # noqa: E731
    w1, v1 = scipy.linalg.eigh(sym(sigma1))
    sqrt_s1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    w = scipy.linalg.eigvalsh(sym(sqrt_s1 @ sigma2 @ sqrt_s1))
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def quantize_uint8(fake: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float images in [0,1] -> uint8 round(clamp(x,0,1)*255); uint8 as is. Raises ValueError (NaN/inf), TypeError."""
    x = _as_tensor(fake)
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"generated images must be float in [0,1] or uint8, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("generated images contain NaN or inf")
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.dtype != torch.uint8:
        raise TypeError(f"real images must be uint8 (0..255), got {real.dtype}")
    if real.dim() != 4 or fake.dim() != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake must both be (N, C, H, W) with equal C, H, W; "
                         f"got real {tuple(real.shape)}, fake {tuple(fake.shape)}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got real N={real.shape[0]}, fake N={fake.shape[0]}")


def _run_metric(metric, real: torch.Tensor, fake: torch.Tensor, device, batch_size: int) -> float:
    """Feed uint8 ``real`` and ``fake`` to a torchmetrics FID metric in batches and compute."""
    metric = metric.to(device)
    with torch.no_grad():
        for imgs, is_real in ((real, True), (fake, False)):
            for start in range(0, imgs.shape[0], batch_size):
                metric.update(imgs[start:start + batch_size].to(device), real=is_real)
        return float(metric.compute())


class ClassifierFeatures(nn.Module):
    """A ``SmallCNN`` as a torchmetrics FID feature extractor: uint8 (B, C, H, W) -> (B, feature_dim) float64."""

    def __init__(self, classifier: SmallCNN):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = int(classifier.kwargs["feature_dim"])

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        """Stay in eval mode whatever is asked."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"ClassifierFeatures expects uint8 images, got {x.dtype}")
        return self.classifier.features(x).double()


def fid_classifier(classifier: SmallCNN, real_uint8: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                   device: str | torch.device = "cpu", batch_size: int = 500) -> float:
    """FID (feature units squared) of uint8 ``real_uint8`` (N, C, H, W) and ``fake`` (M, C, H, W, float in [0,1] or
    uint8) in ``classifier``'s features. Raises ValueError (N or M < 2, shapes, NaN) or TypeError (real not uint8)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake_q = _as_tensor(real_uint8), quantize_uint8(fake)
    _check_pair(real, fake_q)
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), normalize=False)
    return _run_metric(metric, real, fake_q, device, batch_size)


@torch.no_grad()
def classifier_features(classifier: SmallCNN, images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
                        batch_size: int = 500) -> np.ndarray:
    """``classifier`` features of (N, C, H, W) images, quantised by ``quantize_uint8``: (N, d) float64. Raises
    ValueError for NaN/inf or a shape the classifier cannot take."""
    x = quantize_uint8(images)
    feats = [classifier.features(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(feats).numpy()


def fid_from_statistics(ref: tuple[np.ndarray, np.ndarray], features: np.ndarray) -> float:
    """FID of ``ref`` = (mu (d,), sigma (d, d)) and ``features`` (N, d). Raises ValueError for N < 2 or a d mismatch."""
    mu, sigma = feature_statistics(features)
    return frechet_distance(ref[0], ref[1], mu, sigma)
