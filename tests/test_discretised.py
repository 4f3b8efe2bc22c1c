"""Discretised Gaussian log-likelihood per 8-bit bin (``log_discretised_normal``): normalisation, agreement
with independent float64 references (torch.distributions.Normal CDF differences; scipy.special.log_ndtr),
far tails, small-sigma limits, the relation to the dequantised density, dtypes/shapes and input checks."""
import math

import numpy as np
import pytest
import scipy.special
import torch
from torch.distributions import Normal

from vaebench.vae.functional import log_discretised_normal

D64, F32 = torch.float64, torch.float32
X = torch.arange(256)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_params(n, seed=0, ls_lo=-8.0, ls_hi=1.0):
    """n random (mean in [0, 1], log_sigma in [ls_lo, ls_hi]) pairs, float64, shape (n,)."""
    g = gen(seed)
    mean = torch.rand(n, generator=g, dtype=D64)
    log_sigma = ls_lo + (ls_hi - ls_lo) * torch.rand(n, generator=g, dtype=D64)
    return mean, log_sigma


def scipy_log_p(x, mean, log_sigma):
    """log P(x) in float64 numpy from scipy.special.log_ndtr of the standardised bin bounds (edge bins open).

    Interior bins: log(Phi(b) - Phi(a)) on the side of the mean where both are small, as
    log Phi(hi) + log1p(-exp(log Phi(lo) - log Phi(hi))); accurate to ~1e-13 relative where the bin is at
    least ~0.01 sigma wide (the tests below stay there)."""
    x, mean, log_sigma = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(mean, np.float64),
                                             np.asarray(log_sigma, np.float64))
    inv_sigma = np.exp(-log_sigma)
    za = (x / 256.0 - mean) * inv_sigma
    zb = ((x + 1.0) / 256.0 - mean) * inv_sigma
    right = za + zb > 0                                        # bin above the mean: use 1 - Phi by symmetry
    hi = np.where(right, -za, zb)
    lo = np.where(right, -zb, za)
    lo = np.where(x == 0, -np.inf, np.where(x == 255, -np.inf, lo))
    hi = np.where(x == 0, zb, np.where(x == 255, -za, hi))
    lhi, llo = scipy.special.log_ndtr(hi), scipy.special.log_ndtr(lo)
    return lhi + np.log1p(-np.exp(llo - lhi))


# 1. normalisation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, tol", [(D64, 1e-10), (F32, 1e-5)])
def test_bins_sum_to_one(dtype, tol):
    mean, log_sigma = random_params(400, seed=1)
    # include the corners: means at 0 and 1, and the extremes of log_sigma
    mean = torch.cat([mean, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1 / 512], dtype=D64)])
    log_sigma = torch.cat([log_sigma, torch.tensor([-8.0, -8.0, 1.0, 1.0, -8.0, -8.0], dtype=D64)])
    lp = log_discretised_normal(X[:, None], mean.to(dtype), log_sigma.to(dtype))          # (256, n)
    assert lp.shape == (256, len(mean)) and lp.dtype == dtype
    assert torch.isfinite(lp).all()
    total = torch.logsumexp(lp.double(), dim=0)
    assert total.abs().max().item() < tol


def test_edge_bins_are_open_ended():
    # a mean below 0 (or above 1) with a tiny sigma puts all the mass in the edge bin, which extends to -inf (+inf)
    lp = log_discretised_normal(X, torch.tensor(-0.1, dtype=D64), torch.tensor(-8.0, dtype=D64))
    assert abs(lp[0].item()) < 1e-12 and (lp[1:] < -1e3).all()
    lp = log_discretised_normal(X, torch.tensor(1.1, dtype=D64), torch.tensor(-8.0, dtype=D64))
    assert abs(lp[255].item()) < 1e-12 and (lp[:255] < -1e3).all()
    # edge bin with the mean at its inner bound: exactly one half
    lp = log_discretised_normal(torch.tensor([0, 255]), torch.tensor([1 / 256, 255 / 256], dtype=D64),
                                torch.tensor(0.3, dtype=D64))
    torch.testing.assert_close(lp, torch.full((2,), math.log(0.5), dtype=D64), rtol=0, atol=1e-15)


# 2. agreement with an independent reference at moderate z-scores -----------------------------------------

def test_matches_normal_cdf_differences():
    mean, log_sigma = random_params(300, seed=2, ls_lo=-6.0, ls_hi=1.0)
    mean, log_sigma = mean[None], log_sigma[None]
    x = X[:, None]
    sigma = log_sigma.exp()
    normal = Normal(mean, sigma)
    cdf_b = torch.where(x == 255, torch.ones((), dtype=D64), normal.cdf((x + 1.0) / 256.0))
    cdf_a = torch.where(x == 0, torch.zeros((), dtype=D64), normal.cdf(x / 256.0))
    p_ref = cdf_b - cdf_a
    ok = p_ref > 1e-6                                        # where the plain difference is accurate (~1e-10)
    assert ok.sum() > 5000
    lp = log_discretised_normal(x, mean, log_sigma)
    torch.testing.assert_close(lp[ok], p_ref[ok].log(), rtol=0, atol=1e-8)


def test_matches_scipy_log_ndtr_reference_over_wide_range():
    # tails included: every bin of every pixel, log_sigma down to -8; scipy's log_ndtr is independent of torch
    mean, log_sigma = random_params(100, seed=3, ls_lo=-8.0, ls_hi=1.0)
    x = X[:, None]
    ref = torch.from_numpy(scipy_log_p(x.numpy(), mean.numpy(), log_sigma.numpy()))
    lp64 = log_discretised_normal(x, mean, log_sigma)
    scale = ref.abs().clamp(min=1.0)
    assert ((lp64 - ref).abs() / scale).max().item() < 1e-11
    lp32 = log_discretised_normal(x, mean.float(), log_sigma.float()).double()
    assert torch.isfinite(lp32).all()
    # float32 inputs are themselves rounded (which moves a far-tail log P by ~1e-5 relative): compare with
    # the reference at the rounded inputs
    ref32 = torch.from_numpy(scipy_log_p(x.numpy(), mean.float().double().numpy(), log_sigma.float().double().numpy()))
    assert ((lp32 - ref32).abs() / ref32.abs().clamp(min=1.0)).max().item() < 2e-6


# 3. tails ----------------------------------------------------------------------------------------------------

def tail_case(z_lo, width):
    """(x, mean, log_sigma) whose bin x = 100 spans [z_lo, z_lo + width] standard deviations above the mean."""
    sigma = 1.0 / (256.0 * width)
    return 100, 100 / 256.0 - z_lo * sigma, math.log(sigma)


@pytest.mark.parametrize("z_lo, width", [(20.0, 0.01), (50.0, 0.5), (50.0, 2.0), (8.0, 1e-3)])
@pytest.mark.parametrize("side", [1, -1])
def test_tail_bins_match_scipy(z_lo, width, side):
    x, mean, log_sigma = tail_case(z_lo, width)
    if side < 0:                                            # the mirror image: the bin below the mean
        x, mean = 255 - x, 1.0 - mean
    ref = float(scipy_log_p(x, mean, log_sigma))
    # Mills-ratio sanity of the reference itself: log P ~ log phi(z_lo) - log z_lo for a wide bin
    assert ref < -z_lo**2 / 2 + 1.0
    lp64 = log_discretised_normal(torch.tensor(x), torch.tensor(mean, dtype=D64), torch.tensor(log_sigma, dtype=D64))
    assert lp64.item() == pytest.approx(ref, rel=1e-11)
    lp32 = log_discretised_normal(torch.tensor(x), torch.tensor(mean, dtype=F32), torch.tensor(log_sigma, dtype=F32))
    assert math.isfinite(lp32.item())
    # float32 inputs are themselves rounded: compare with the reference at the rounded inputs
    ref32 = float(scipy_log_p(x, float(np.float32(mean)), float(np.float32(log_sigma))))
    assert lp32.item() == pytest.approx(ref32, rel=2e-5)


def test_far_tail_where_float32_cdfs_underflow():
    # sigma = e^-8 (~3.4e-4) and the mean in another bin: both CDFs are far below float32's smallest number
    x = torch.tensor([0, 3, 100, 200, 254, 255])
    for mean_value in (0.0, 0.5, 1.0, 0.997):
        for dtype in (F32, D64):
            mean, ls = torch.tensor(mean_value, dtype=dtype), torch.tensor(-8.0, dtype=dtype)
            lp = log_discretised_normal(x, mean, ls)
            assert torch.isfinite(lp).all()
            far = ((x + 0.5) / 256 - mean_value).abs() > 2 / 256
            assert (lp[far] < -100).all()
            ref = torch.from_numpy(scipy_log_p(x.numpy(), float(mean), -8.0))
            torch.testing.assert_close(lp.double(), ref, rtol=1e-6 if dtype == F32 else 1e-12, atol=1e-6)
    # asymptotic check independent of log_ndtr: log P ~ -z^2/2 - log z - log sqrt(2 pi) (Mills ratio; the
    # upper bound's contribution is negligible for a bin ~11.6 sigma wide), z = standardised near bound
    z = (100 / 256 - 0.0) * math.exp(8.0)
    lp = log_discretised_normal(torch.tensor(100), torch.tensor(0.0), torch.tensor(-8.0)).item()
    assert lp == pytest.approx(-z * z / 2 - math.log(z) - 0.5 * math.log(2 * math.pi), rel=1e-6)


def test_finite_for_extreme_finite_inputs():
    means = torch.tensor([-3e38, -1e30, -1e6, -5.0, 0.0, 0.5, 1.0, 7.0, 1e6, 1e30, 3e38])
    log_sigmas = torch.tensor([-1e30, -100.0, -44.0, -30.0, -8.0, 0.0, 8.0, 30.0, 88.0, 100.0, 1e30])
    for dtype in (F32, D64):
        lp = log_discretised_normal(X[:, None, None], means[:, None].to(dtype), log_sigmas.to(dtype))
        assert lp.shape == (256, 11, 11)
        assert torch.isfinite(lp).all()
        assert (lp <= 0).all()


# 4. small-sigma limits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, D64])
def test_small_sigma_limits(dtype):
    x = torch.tensor([1, 17, 128, 254])
    centre = (x.double() + 0.5) / 256
    for ls in (-8.0, -10.0):
        d = math.exp(-ls) / 512                             # half bin width in sigmas
        # mean at the bin centre: log P = log(1 - 2 Phi(-d)) -> 0
        lp = log_discretised_normal(x, centre.to(dtype), torch.tensor(ls, dtype=dtype))
        expected = math.log1p(-2 * scipy.special.ndtr(-d))
        assert expected > -1e-8
        torch.testing.assert_close(lp.double(), torch.full((4,), expected, dtype=D64), rtol=0, atol=1e-7)
        # mean three bins away: very negative, as the reference says
        lp = log_discretised_normal(x, (centre + 3 / 256).to(dtype), torch.tensor(ls, dtype=dtype))
        assert (lp < -250).all() and torch.isfinite(lp).all()
        ref = torch.from_numpy(scipy_log_p(x.numpy(), (centre + 3 / 256).numpy(), ls))
        torch.testing.assert_close(lp.double(), ref, rtol=1e-5 if dtype == F32 else 1e-12, atol=0)


# 5. relation to the dequantised density -----------------------------------------------------------------

@pytest.mark.parametrize("dtype, tol", [(D64, 1e-7), (F32, 2e-6)])
def test_wide_sigma_matches_dequantised_density(dtype, tol):
    # sigma = 0.2 >> 1/256: P(x) ~ (1/256) N(y_c; mean, sigma) with y_c the bin centre (midpoint rule), with
    # the known second-order correction log P - log((1/256) N(y_c)) = d^2 (zc^2 - 1)/6 + O(d^4) (up to
    # 3.8e-4 here; the O(d^4) rest is < 1e-7), d = 1/(512 sigma) the half bin width in sigmas
    sigma = 0.2
    x = torch.arange(1, 255)[:, None]
    mean = torch.tensor([0.1, 0.5, 0.77, 0.95], dtype=D64)
    y_c = (x + 0.5) / 256
    approx = Normal(mean, sigma).log_prob(y_c) - math.log(256)
    lp = log_discretised_normal(x, mean.to(dtype), torch.tensor(math.log(sigma), dtype=dtype)).double()
    assert (lp - approx).abs().max().item() < 5e-4
    d = 1 / (512 * sigma)
    zc = (y_c - mean) / sigma
    torch.testing.assert_close(lp - approx, d * d * (zc * zc - 1) / 6, rtol=0, atol=tol)


# shapes, dtypes, input checks ----------------------------------------------------------------------------

def test_broadcasting_and_dtypes():
    g = gen(4)
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=g, dtype=torch.uint8)
    mean = torch.rand(5, 2, 3, 4, 4, generator=g)
    lp = log_discretised_normal(x, mean, torch.tensor(-2.0))
    assert lp.shape == (5, 2, 3, 4, 4) and lp.dtype == F32
    lp_sig = log_discretised_normal(x, mean, torch.full((5, 1, 1, 1, 1), -2.0))
    torch.testing.assert_close(lp, lp_sig, rtol=0, atol=0)
    lp64 = log_discretised_normal(x.long(), mean.double(), torch.tensor(-2.0, dtype=D64))
    assert lp64.dtype == D64
    torch.testing.assert_close(lp.double(), lp64, rtol=1e-5, atol=1e-5)
    # elementwise: equals the per-element evaluation
    one = log_discretised_normal(x[1, 2, 3, 0], mean[4, 1, 2, 3, 0], torch.tensor(-2.0))
    assert one.shape == () and one.item() == lp[4, 1, 2, 3, 0].item()
    half = log_discretised_normal(x, mean.half(), torch.tensor(-8.0))
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0.0, 1.0]), "integer"),
    (torch.tensor([True, False]), "integer"),
    (torch.tensor([0, 256]), "0..256"),
    (torch.tensor([-1, 3], dtype=torch.int16), "-1..3"),
])
def test_rejects_bad_x(bad, match):
    with pytest.raises(ValueError, match=match):
        log_discretised_normal(bad, torch.tensor(0.5), torch.tensor(0.0))


def test_rejects_integer_mean():
    with pytest.raises(ValueError, match="float"):
        log_discretised_normal(torch.tensor([3]), torch.tensor([1]), torch.tensor(0.0))


def test_fast_path_equals_stable_path_on_decoder_like_inputs():
    """The float64 CDF-difference fast path of log_discretised_normal agrees with the stable reference
    implementation on decoder-like inputs (means near the data, sigmas from e^-6 to 1), both dtypes."""
    from vaebench.vae.functional import _log_discretised_normal_stable, log_discretised_normal

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8)
    x[:, :, :10] = 0                                                     # saturated pixels, as in MNIST
    x[:, :, -5:] = 255
    for dtype in (torch.float32, torch.float64):
        mean = ((x.double() + 0.5) / 256 + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(dtype)
        for log_sigma in (torch.tensor(-6.0), torch.tensor(-2.5), torch.tensor(0.0),
                          -6 * torch.rand(x.shape, generator=g)):
            fast = log_discretised_normal(x, mean, log_sigma.to(dtype)).double()
            ref = _log_discretised_normal_stable(x, mean, log_sigma.to(dtype)).double()
            tol = 1e-9 if dtype == torch.float64 else 1e-5
            assert ((fast - ref).abs() / ref.abs().clamp(min=1)).max().item() < tol
