"""Fréchet distances between real images and VAE samples (Heusel et al. 2017, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium").

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})          (Heusel et al. 2017)

Two feature spaces:
  * ``fid_classifier``: penultimate activations of a ``SmallCNN`` trained on the dataset (offline,
    in-domain, cheap). Values are comparable only between runs scored with the same checkpoint,
    the same reference split and the same number of images N (FID is biased and falls as N grows).
  * Inception-v3 pool3 (2048-d) features with the TF-ported ``inception-2015-12-05`` weights, through
    torch-fidelity: ``vaebench.metrics.inception`` (weights lookup, features, statistics).

Protocol shared by both: real images are uint8; generated images (float in [0,1]) are clamped to
[0,1] and QUANTISED with round(x*255) to uint8 first, so both sets take exactly the same path into the
feature extractor (clean-fid shows quantisation matters). torchmetrics is used with
``normalize=False`` and uint8 input for that reason: with ``normalize=True`` it would floor
(``(x*255).byte()``) float images for Inception and pass them through unchanged for a custom module.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn

from vaebench.metrics.classifier import SmallCNN



# -----------------------------------------------------------------------------
# Fréchet distance of two Gaussians

def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), float64, of features (N, d); ValueError if N < 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics needs an (N, d) array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    Tr((S1 S2)^{1/2}) is computed as the sum of sqrt-eigenvalues of the symmetric PSD matrix
    S1^{1/2} S2 S1^{1/2} (same eigenvalues as S1 S2). Own implementation rather than torchmetrics'
    private ``_compute_fid`` (not public API) or ``scipy.linalg.sqrtm`` of the non-symmetric S1 S2
    (pytorch-fid's way, which can return complex values and needs an eps retry on singular
    covariances): ``eigh`` on symmetric matrices is real and stable, also for rank-deficient
    covariances (N <= d), where tiny negative eigenvalues from round-off are clipped to 0.

    Args:
        mu1, mu2: means (d,). sigma1, sigma2: covariances (d, d).
    Returns:
        the squared-distance value (>= 0 up to round-off) as a Python float.
    Raises:
        ValueError: inconsistent shapes (named) or non-finite values.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    for name, arr, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)),
                             ("sigma2", sigma2, (d, d))):
        if arr.shape != shape:
            raise ValueError(f"frechet_distance: {name} has shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"frechet_distance: {name} contains NaN or inf")
    sym = lambda a: (a + a.T) / 2  # noqa: E731  remove round-off asymmetry
    w1, v1 = scipy.linalg.eigh(sym(sigma1))
    sqrt_s1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    w = scipy.linalg.eigvalsh(sym(sqrt_s1 @ sigma2 @ sqrt_s1))
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# -----------------------------------------------------------------------------
# Input handling shared by both feature extractors

def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def quantize_uint8(fake: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float images in [0,1] (any shape) -> uint8 round(clamp(x,0,1)*255); uint8 input is returned as is.

    Raises:
        ValueError: NaN/inf in ``fake`` (would otherwise quantise silently).
        TypeError: neither floating point nor uint8.
    """
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


# -----------------------------------------------------------------------------
# Classifier FID

class ClassifierFeatures(nn.Module):
    """Adapter making a ``SmallCNN`` a torchmetrics FID feature extractor.

    Input: uint8 images (B, C, H, W) in 0..255 (what the metric is fed with ``normalize=False``).
    Output: (B, feature_dim) float64 penultimate activations (float64 so that torchmetrics returns the
    FID in float64: it casts its result to the features' dtype). Always in eval mode, no gradients.
    """

    def __init__(self, classifier: SmallCNN):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = int(classifier.kwargs["feature_dim"])  # torchmetrics reads this

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        """Stay in eval mode whatever is asked (dropout/batch-norm free anyway)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"ClassifierFeatures expects uint8 images, got {x.dtype}")
        return self.classifier.features(x).double()


def fid_classifier(classifier: SmallCNN, real_uint8: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                   device: str | torch.device = "cpu", batch_size: int = 500) -> float:
    """FID in the feature space of ``classifier`` (torchmetrics ``FrechetInceptionDistance`` with a custom module).

    Args:
        classifier: trained SmallCNN (its input C, H, W must match the images).
        real_uint8: reference images (N, C, H, W) uint8, e.g. the prepared test split.
        fake: generated images (M, C, H, W) float in [0,1] (clamped, then quantised to uint8 with
            round(x*255)); uint8 is accepted as already quantised.
        device: where features are computed. batch_size: images per forward pass.
    Returns:
        FID (float, feature units squared; lower is better).
    Raises:
        ValueError: N or M < 2, shape mismatch, NaN in ``fake``. TypeError: real not uint8.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake_q = _as_tensor(real_uint8), quantize_uint8(fake)
    _check_pair(real, fake_q)
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), normalize=False)
    return _run_metric(metric, real, fake_q, device, batch_size)


@torch.no_grad()
def classifier_features(classifier: SmallCNN, images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
                        batch_size: int = 500) -> np.ndarray:
    """Penultimate activations of ``classifier`` for images quantised like every FID input here:
    (N, C, H, W) uint8, or float in [0, 1] (rounded to uint8 first, see ``quantize_uint8``) -> (N, d) float64.

    Raises:
        ValueError: NaN/inf in float images, or a shape the classifier cannot take.
    """
    x = quantize_uint8(images)
    feats = [classifier.features(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(feats).numpy()


def fid_from_statistics(ref: tuple[np.ndarray, np.ndarray], features: np.ndarray) -> float:
    """FID between reference statistics ``ref`` = (mu (d,), sigma (d, d)) and the statistics of ``features``
    (N, d) (``feature_statistics`` then ``frechet_distance``). Raises ValueError for N < 2 or a d mismatch."""
    mu, sigma = feature_statistics(features)
    return frechet_distance(ref[0], ref[1], mu, sigma)
