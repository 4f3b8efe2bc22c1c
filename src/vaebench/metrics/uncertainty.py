"""Uncertainty of benchmark numbers: summaries over training seeds and paired model comparisons.

Every cell (dataset x model x seed) is evaluated on the same fixed test images, so two models can be compared
image by image (paired differences), and the training seeds of one model are a second, independent source of
variance (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks", MLSys).

All outputs are plain Python floats / ints / strings / lists (JSON-serialisable); a quantity that is undefined
(e.g. a standard deviation from one seed) is ``None``, never NaN.

Sources for the formulas: the Student-t interval for a mean and the paired-difference test are textbook
(e.g. Wasserman 2004, "All of Statistics", Sections 6.3.2 and 10.1; Casella & Berger 2002, "Statistical
Inference", Section 9.2); their use for comparing systems on the same test set follows Dror et al. 2018,
"The Hitchhiker's Guide to Testing Statistical Significance in Natural Language Processing", ACL.
"""
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
    import scipy.stats  # lazy: ~0.8 s to import, paid by every train/evaluate job that loads the study otherwise

    return float(scipy.stats.t.ppf(0.5 + level / 2.0, df))


def _normal_quantile(level: float) -> float:
    """z_{(1+level)/2} (1.959964 for level 0.95)."""
    import scipy.stats  # lazy, as above

    return float(scipy.stats.norm.ppf(0.5 + level / 2.0))


def _verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """"A better" / "B better" when the interval for A - B excludes 0, else "inconclusive"."""
    if ci_low > 0.0:
        return "A better" if higher_is_better else "B better"
    if ci_high < 0.0:
        return "B better" if higher_is_better else "A better"
    return "inconclusive"


def seed_summary(values_per_seed: Sequence[float], level: float = 0.95) -> dict:
    """Mean over training seeds with a Student-t confidence interval.

    The seeds are treated as an i.i.d. sample of training runs (Bouthillier et al. 2021); the interval is
    mean +- t_{S-1, (1+level)/2} * std / sqrt(S) with the sample std (ddof=1) (Wasserman 2004, Section 6.3.2).
    It is exact for normally distributed seed values and very wide for S = 2 (t_{1, 0.975} = 12.7).

    Args:
        values_per_seed: (S,) one value per seed (e.g. mean test ELBO in nats per image), S >= 1.
        level: confidence level of the interval, in (0, 1).
    Returns:
        {"mean": float, "std": float | None, "se": float | None, "ci_low": float | None,
        "ci_high": float | None, "n_seeds": int, "level": float}, in the units of the input. ``std``, ``se``
        and the interval are ``None`` for S = 1 (no estimate of the seed variance).
    Raises:
        ValueError: empty or non-1-D input, a non-finite value (its index is named), or level outside (0, 1).
    """
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
    """Standard error of the mean over test images: std(values, ddof=1) / sqrt(n).

    This is the test-set sampling error of one cell's mean only (it ignores training randomness).

    Args:
        values: (n,) per-image values (e.g. ELBO in nats per image), n >= 2.
    Returns:
        The standard error, in the units of ``values``.
    Raises:
        ValueError: not 1-D, n < 2, or a non-finite value (its index is named).
    """
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
    """Paired comparison of models A and B on the same test images, over S paired training seeds.

    Per seed s (the caller pairs a_per_seed[s] with b_per_seed[s], e.g. same seed value):
    d_s = mean_i(a_s[i] - b_s[i]) and its within-seed paired standard error
    se_s = std_i(a_s - b_s, ddof=1) / sqrt(n) (paired differences on a shared test set; Dror et al. 2018,
    Section 3; Wasserman 2004, Section 10.1). Over seeds:

    - diff = mean_s d_s;
    - se_seeds = std_s(d_s, ddof=1) / sqrt(S): the between-seed standard error. Each d_s already carries its
      test-image noise, so this covers image sampling *and* training randomness (Bouthillier et al. 2021);
    - se_images = sqrt(sum_s se_s^2) / S: the image-sampling part alone (what is left with S = 1).

    Interval: with S >= 2, diff +- t_{S-1, (1+level)/2} * se_seeds (a one-sample t interval on the d_s,
    identical to ``scipy.stats.ttest_1samp(d).confidence_interval``); ``interval_basis`` = "seeds". With S = 1,
    diff +- z_{(1+level)/2} * se_images (normal approximation over images; it ignores training randomness, so
    it describes these two trained models, not the two methods); ``interval_basis`` = "images".
    With few seeds se_seeds is itself noisy (df = S - 1) and can by chance be smaller than se_images; both are
    reported so that the reader can see this.

    Args:
        a_per_seed: S arrays, each (n,) float, per-image values of model A (e.g. ELBO in nats per image).
        b_per_seed: S arrays, each (n,), model B, image i of b_per_seed[s] is image i of a_per_seed[s].
        level: confidence level, in (0, 1).
        higher_is_better: True for log-likelihood-type metrics (ELBO, L_k); False for losses / NLL / bits/dim.
    Returns:
        {"diff": float (A - B), "se_seeds": float | None (None for S = 1), "se_images": float,
        "ci_low": float, "ci_high": float, "level": float, "interval_basis": "seeds" | "images",
        "df": int | None (S - 1 for the t interval, None for the normal one),
        "verdict": "A better" | "B better" | "inconclusive" (A or B better when the interval excludes 0),
        "higher_is_better": bool, "n_seeds": int, "n_images": int,
        "diff_per_seed": [d_s], "se_per_seed": [se_s]}; all in the units of the inputs.
    Raises:
        ValueError: different seed counts, no seeds, an array that is not 1-D, arrays of different lengths
            (all 2S arrays must have the same n, the fixed test set), n < 2, a non-finite value, or level
            outside (0, 1). Messages name the seeds and lengths involved.
    """
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

    d = np.empty(s_count)
    se = np.empty(s_count)
    for s in range(s_count):
        delta = a_arrs[s] - b_arrs[s]
        d[s] = delta.mean()
        se[s] = delta.std(ddof=1) / math.sqrt(n)
    diff = float(d.mean())
    se_images = float(math.sqrt(float(np.sum(se ** 2))) / s_count)
    if s_count >= 2:
        se_seeds = float(d.std(ddof=1) / math.sqrt(s_count))
        df = s_count - 1
        half = _t_quantile(level, df) * se_seeds
        basis = "seeds"
    else:
        se_seeds, df = None, None
        half = _normal_quantile(level) * se_images
        basis = "images"
    ci_low, ci_high = diff - half, diff + half
    return {"diff": diff, "se_seeds": se_seeds, "se_images": se_images, "ci_low": ci_low, "ci_high": ci_high,
            "level": level, "interval_basis": basis, "df": df,
            "verdict": _verdict(ci_low, ci_high, bool(higher_is_better)),
            "higher_is_better": bool(higher_is_better), "n_seeds": s_count, "n_images": int(n),
            "diff_per_seed": [float(x) for x in d], "se_per_seed": [float(x) for x in se]}


def paired_difference_scalar(a_per_seed: Sequence[float], b_per_seed: Sequence[float], level: float = 0.95,
                             higher_is_better: bool = True) -> dict:
    """Paired comparison of A and B for a metric with one value per seed and no per-image values (e.g. FID).

    d_s = a_s - b_s, diff = mean_s d_s, se_seeds = std_s(d_s, ddof=1) / sqrt(S), interval
    diff +- t_{S-1, (1+level)/2} * se_seeds (one-sample t interval on the paired differences; Wasserman 2004,
    Section 10.1; Dror et al. 2018). Seeds are paired by index (the caller aligns them).

    Args:
        a_per_seed: (S,) values of model A per seed, S >= 1.
        b_per_seed: (S,) values of model B, paired with ``a_per_seed`` by index.
        level: confidence level, in (0, 1).
        higher_is_better: False for FID and other distances / losses.
    Returns:
        The keys of :func:`paired_difference`, with "se_images": None and "n_images": None. For S = 1:
        "se_seeds", "ci_low", "ci_high", "df" and "interval_basis" are None and "verdict" is
        "inconclusive (one seed)" (one paired value carries no estimate of its own uncertainty).
    Raises:
        ValueError: different or zero seed counts, a non-finite value (its index is named), level outside (0, 1).
    """
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
    out = {"diff": diff, "se_seeds": None, "se_images": None, "ci_low": None, "ci_high": None, "level": level,
           "interval_basis": None, "df": None, "verdict": "inconclusive (one seed)",
           "higher_is_better": bool(higher_is_better), "n_seeds": s_count, "n_images": None,
           "diff_per_seed": [float(x) for x in d], "se_per_seed": None}
    if s_count >= 2:
        se_seeds = float(d.std(ddof=1) / math.sqrt(s_count))
        half = _t_quantile(level, s_count - 1) * se_seeds
        ci_low, ci_high = diff - half, diff + half
        out.update(se_seeds=se_seeds, ci_low=ci_low, ci_high=ci_high, interval_basis="seeds", df=s_count - 1,
                   verdict=_verdict(ci_low, ci_high, bool(higher_is_better)))
    return out


def spread(values: Sequence[float]) -> dict:
    """Descriptive spread of repeated measurements (e.g. FID over sampling seeds of one trained model).

    Args:
        values: (n,) finite values, n >= 1.
    Returns:
        {"mean": float, "std": float | None (ddof=1; None for n = 1), "min": float, "max": float, "n": int}.
    Raises:
        ValueError: empty or non-1-D input, or a non-finite value (its index is named).
    """
    v = _finite_scalars(values, "spread")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size >= 2 else None,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
