"""Summaries over training seeds and paired model comparisons on the same test images (Bouthillier et al. 2021;
Dror et al. 2018; Wasserman 2004, Sections 6.3.2 and 10.1). Outputs are JSON-serialisable; undefined is None."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _check_level(level: float, where: str) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{where}: level must be in (0, 1), got {level!r}")
    return level


def _finite_scalars(values: Sequence[float], where: str, name: str = "values") -> np.ndarray:
    """1-D float64 copy of ``values``; ValueError naming the first non-finite index, or if empty / not 1-D."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{where}: {name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{where}: {name} is empty (need at least one seed)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{where}: {name}[{int(bad[0])}] is not finite ({arr[bad[0]]!r}); "
                         f"non-finite indices: {bad.tolist()}")
    return arr


def _t_quantile(level: float, df: int) -> float:
    """t_{df, (1+level)/2}: the two-sided critical value of Student's t with ``df`` degrees of freedom."""
    import scipy.stats

    return float(scipy.stats.t.ppf(0.5 + level / 2.0, df))


def _normal_quantile(level: float) -> float:
    """z_{(1+level)/2} (1.959964 for level 0.95)."""
    import scipy.stats

    return float(scipy.stats.norm.ppf(0.5 + level / 2.0))


def _verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """"A better" / "B better" when the interval for A - B excludes 0, else "inconclusive"."""
    if ci_low > 0.0:
        return "A better" if higher_is_better else "B better"
    if ci_high < 0.0:
        return "B better" if higher_is_better else "A better"
    return "inconclusive"


def seed_summary(values_per_seed: Sequence[float], level: float = 0.95) -> dict:
    """Mean over S seed values with the Student-t interval mean +- t_{S-1} std / sqrt(S) (Wasserman 2004, Section
    6.3.2): {"mean", "std", "se", "ci_low", "ci_high" (None for S = 1), "n_seeds", "level"}, input units.
    Raises ValueError for empty, non-1-D or non-finite input or a level outside (0, 1)."""
    level = _check_level(level, "seed_summary")
    v = _finite_scalars(values_per_seed, "seed_summary", "values_per_seed")
    s = int(v.size)
    mean = float(v.mean())
    out = {"mean": mean, "std": None, "se": None, "ci_low": None, "ci_high": None, "n_seeds": s,
           "level": level}
    if s >= 2:
        std = float(v.std(ddof=1))
        se = std / math.sqrt(s)
        half = _t_quantile(level, s - 1) * se
        out.update(std=std, se=se, ci_low=mean - half, ci_high=mean + half)
    return out


def per_image_se(values: np.ndarray) -> float:
    """std(values, ddof=1) / sqrt(n) of (n,) per-image values, n >= 2. Raises ValueError (not 1-D, n < 2, non-finite)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"per_image_se: values must be 1-D (n,), got shape {v.shape}")
    if v.size < 2:
        raise ValueError(f"per_image_se: need at least 2 images, got n={v.size}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"per_image_se: values[{int(bad[0])}] is not finite ({v[bad[0]]!r}); "
                         f"{bad.size} non-finite value(s)")
    return float(v.std(ddof=1) / math.sqrt(v.size))


def paired_difference(a_per_seed: Sequence[np.ndarray], b_per_seed: Sequence[np.ndarray], level: float = 0.95,
                      higher_is_better: bool = True) -> dict:
    """Paired comparison of A and B from S seeds of (n,) per-image values on the same images, with both error
    sources: seeds and test images (a two-level design, delta_si = mu + a_s + b_i + e_si; Dror et al. 2018,
    Section 3; Satterthwaite 1946). diff = mean of delta_si;
    se^2 = se_seeds^2 + se_images^2 with se_seeds^2 = var_s(mean_i delta_si) / S and
    se_images^2 = var_i(mean_s delta_si) / n (each counts the interaction once: conservative); a t interval with
    Satterthwaite's df (S >= 2, ``interval_basis`` "seeds and images") or a normal one on se_images (S = 1,
    "images": the seed variance is then unknown).
    Returns {"diff", "se", "se_seeds", "se_images", "ci_low", "ci_high", "level", "interval_basis", "df",
    "verdict", "higher_is_better", "n_seeds", "n_images", "diff_per_seed", "se_per_seed"} in input units.
    Raises ValueError for unpaired seeds, no seeds, arrays not 1-D or of different lengths, n < 2, non-finite
    values or a level outside (0, 1)."""
    level = _check_level(level, "paired_difference")
    if len(a_per_seed) != len(b_per_seed):
        raise ValueError(f"paired_difference: A has {len(a_per_seed)} seeds but B has {len(b_per_seed)}; "
                         "seeds must be paired one to one")
    s_count = len(a_per_seed)
    if s_count == 0:
        raise ValueError("paired_difference: no seeds given")
    a_arrs = [np.asarray(x, dtype=np.float64) for x in a_per_seed]
    b_arrs = [np.asarray(x, dtype=np.float64) for x in b_per_seed]
    for name, arrs in (("A", a_arrs), ("B", b_arrs)):
        for s, x in enumerate(arrs):
            if x.ndim != 1:
                raise ValueError(f"paired_difference: {name} seed {s} must be 1-D (n,), got shape {x.shape}")
    n = a_arrs[0].size
    lengths_a = [x.size for x in a_arrs]
    lengths_b = [x.size for x in b_arrs]
    if any(m != n for m in lengths_a + lengths_b):
        raise ValueError(f"paired_difference: per-image arrays must all have the same length (the same test "
                         f"images); lengths of A per seed {lengths_a}, of B per seed {lengths_b}")
    if n < 2:
        raise ValueError(f"paired_difference: need at least 2 images, got n={n}")
    for name, arrs in (("A", a_arrs), ("B", b_arrs)):
        for s, x in enumerate(arrs):
            bad = np.flatnonzero(~np.isfinite(x))
            if bad.size:
                raise ValueError(f"paired_difference: {name} seed {s} image {int(bad[0])} is not finite "
                                 f"({x[bad[0]]!r}); {bad.size} non-finite value(s)")

    delta = np.stack(a_arrs) - np.stack(b_arrs)                     # (S, n)
    d = delta.mean(axis=1)
    se = delta.std(axis=1, ddof=1) / math.sqrt(n)
    diff = float(d.mean())
    se_images = float(delta.mean(axis=0).std(ddof=1) / math.sqrt(n))
    if s_count >= 2:
        se_seeds = float(d.std(ddof=1) / math.sqrt(s_count))
        se_total = math.sqrt(se_seeds ** 2 + se_images ** 2)
        denom = se_seeds ** 4 / (s_count - 1) + se_images ** 4 / (n - 1)
        df = float(se_total ** 4 / denom) if denom > 0 else float(s_count - 1)
        half = _t_quantile(level, df) * se_total
        basis = "seeds and images"
    else:
        se_seeds, df, se_total = None, None, se_images
        half = _normal_quantile(level) * se_images
        basis = "images"
    ci_low, ci_high = diff - half, diff + half
    return {"diff": diff, "se": se_total, "se_seeds": se_seeds, "se_images": se_images, "ci_low": ci_low,
            "ci_high": ci_high,
            "level": level, "interval_basis": basis, "df": df,
            "verdict": _verdict(ci_low, ci_high, bool(higher_is_better)),
            "higher_is_better": bool(higher_is_better), "n_seeds": s_count, "n_images": int(n),
            "diff_per_seed": [float(x) for x in d], "se_per_seed": [float(x) for x in se]}


def paired_difference_scalar(a_per_seed: Sequence[float], b_per_seed: Sequence[float], level: float = 0.95,
                             higher_is_better: bool = True) -> dict:
    """:func:`paired_difference` for one value per seed (e.g. FID): a t interval on d_s = a_s - b_s; "se_images"
    and "n_images" are None, and for S = 1 so is the interval, with verdict "inconclusive (one seed)".
    Raises ValueError for unpaired or no seeds, non-finite values or a level outside (0, 1)."""
    level = _check_level(level, "paired_difference_scalar")
    a = np.asarray(a_per_seed, dtype=np.float64)
    b = np.asarray(b_per_seed, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size != b.size:
        raise ValueError(f"paired_difference_scalar: A and B must be 1-D with one value per paired seed; "
                         f"got shapes {a.shape} and {b.shape}")
    a = _finite_scalars(a, "paired_difference_scalar", "a_per_seed")
    b = _finite_scalars(b, "paired_difference_scalar", "b_per_seed")
    d = a - b
    s_count = int(d.size)
    diff = float(d.mean())
    out = {"diff": diff, "se": None, "se_seeds": None, "se_images": None, "ci_low": None, "ci_high": None, "level": level,
           "interval_basis": None, "df": None, "verdict": "inconclusive (one seed)",
           "higher_is_better": bool(higher_is_better), "n_seeds": s_count, "n_images": None,
           "diff_per_seed": [float(x) for x in d], "se_per_seed": None}
    if s_count >= 2:
        se_seeds = float(d.std(ddof=1) / math.sqrt(s_count))
        half = _t_quantile(level, s_count - 1) * se_seeds
        ci_low, ci_high = diff - half, diff + half
        out.update(se=se_seeds, se_seeds=se_seeds, ci_low=ci_low, ci_high=ci_high, interval_basis="seeds", df=s_count - 1,
                   verdict=_verdict(ci_low, ci_high, bool(higher_is_better)))
    return out


def spread(values: Sequence[float]) -> dict:
    """{"mean", "std" (ddof=1, None for n = 1), "min", "max", "n"} of (n,) values. Raises ValueError."""
    v = _finite_scalars(values, "spread")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size >= 2 else None,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
