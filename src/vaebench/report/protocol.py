"""The report's protocol and introduction, from the cells' configuration records and the metrics fields."""
from __future__ import annotations

from typing import Any

import pandas as pd

from vaebench.metrics import spec as metric_spec
from vaebench.report.collect import LEVEL
from vaebench.report.flags import RULES
from vaebench.report.format import NOT_A_DENSITY, accuracy_text, fid_unavailable_text, is_false, missing, plain, rows_of, unique
from vaebench.report.tables.results import DISCRETISED_NOTE

PROTOCOL_SECTIONS = ("train", "evaluate")


def _setting_text(key: str, value: Any) -> str:
    """A stage setting for the protocol; null evaluation sizes mean the whole test split."""
    if missing(value):
        return "null (the whole test split)" if key == "n_images" else "null"
    if isinstance(value, bool):
        return str(value).lower()
    return plain(value)


def _model_setting(frame: pd.DataFrame, model: str, col: str) -> str:
    values = [_setting_text(col.rsplit(".", 1)[-1], v) for v in rows_of(frame, model=model)[col].tolist()]
    return " / ".join(dict.fromkeys(values)) if values else "n/a"


def common_settings(frame: pd.DataFrame, models: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The stage settings of the cell records (``cell.train.*``, ``cell.evaluate.*``) shared by most models.

    Returns ``(common, differing)``: ``common`` maps 'train.lr', 'evaluate.iwae_k', ... to the value of
    most models (ties: the first model in grid order), as protocol text; ``differing`` maps a model to
    {setting: its value} for the settings where it differs from ``common``.
    """
    common: dict[str, str] = {}
    differing: dict[str, dict[str, str]] = {}
    for section in PROTOCOL_SECTIONS:
        cols = sorted(c for c in frame.columns if c.startswith(f"cell.{section}."))
        for col in cols:
            key = col[len("cell."):]
            per_model = {m: _model_setting(frame, m, col) for m in models}
            counts: dict[str, int] = {}
            for v in per_model.values():
                counts[v] = counts.get(v, 0) + 1
            top = max(counts.values(), default=0)
            value = next((v for v in per_model.values() if counts[v] == top), "n/a")
            common[key] = value
            for m, v in per_model.items():
                if v != value:
                    differing.setdefault(m, {})[key] = v
    return common, differing


def setting_differences(frame: pd.DataFrame, models: list[str]) -> list[str]:
    """One line per model whose train / evaluate settings differ from the other models' (empty when none)."""
    common, differing = common_settings(frame, models)
    return [f"{m}: " + ", ".join(f"{k} = {v} (others: {common[k]})" for k, v in diffs.items())
            for m, diffs in differing.items()]


def protocol_items(frame: pd.DataFrame, datasets: list[str], models: list[str], seeds: list) -> list[str]:
    """The protocol as sentences: seeds and intervals, training, the test images, ELBO, -L_k and its
    diagnostic, per-likelihood conventions, latent analysis, FID, paired comparisons, flags, grids, data.

    Settings come from the cells' configuration records (``cell.*`` columns) and the metrics fields; where
    a model's setting differs from the others', the sentence gives the others' value ("per-model
    differences below", see :func:`setting_differences`).
    """
    common, differing = common_settings(frame, models)
    c = lambda k: common.get(k, "n/a")  # noqa: E731
    u = lambda col, df=frame: unique(df, col)  # noqa: E731
    more = " (per-model differences below)" if differing else ""
    items = [
        f"Seeds: {', '.join(map(str, seeds))}. Every table gives the mean over training "
        f"seeds ± the half-width of its {LEVEL:.0%} interval, t_(S-1, 0.975) std / sqrt(S) with the sample std "
        "(ddof = 1) (Student t; Bouthillier et al. 2021 for seeds as a source of variance); with a single seed "
        "there is no interval (reports/metrics.json also holds std and se). The interval is very wide with 2 seeds (t_(1, 0.975) = 12.7).",
        f"Training: {c('train.epochs')} epoch(s), batch size {c('train.batch_size')}, learning rate "
        f"{c('train.lr')}{more}; epochs run per cell: {u('epochs')}; device: {u('device')}.",
        f"Test images: every per-image estimate (ELBO and its terms, L_k and its diagnostic, the discretised "
        f"column, the latent analysis) is on the same {u('n_images')} test images (evaluate.n_images = "
        f"{c('evaluate.n_images')}), a fixed random subset drawn with evaluate.seed = {c('evaluate.seed')}, "
        "identical for every model and seed, so that models are compared image by image (per-image values in "
        "each cell's per_image.npz).",
        "ELBO: single-sample estimate, one z ~ q(z|x) per image, with the closed-form KL (Kingma & Welling 2014, "
        "eq. 7); the reconstruction NLL and KL columns are its two terms.",
        f"Test NLL: -L_k, the importance-weighted bound of Burda et al. (2016, eq. 8) with k = {u('iwae_k')} "
        f"samples per image (evaluate.iwae_k = {c('evaluate.iwae_k')}), computed with each model's own posterior "
        "density; an upper bound on -log p(x) that tightens as k grows. Diagnostic: L_k - L_{k/10}, with "
        "L_{k/10} the mean bound of 10 disjoint blocks of the same k samples; a gap above "
        f"evaluate.lk_tolerance_nats = {c('evaluate.lk_tolerance_nats')} nats/image flags -L_k as not converged.",
        f"Test data: mapped once into each model's data space (binarised or dequantised, see below) with seed "
        f"evaluate.seed = {c('evaluate.seed')}, so every model of a data space is scored on the same test data; "
        "the same seed draws the posterior and prior samples. Results tables are split by data space: a "
        "likelihood of binarised images and a density of dequantised 8-bit images are different quantities "
        "and never share a column.",
    ]
    items += likelihood_items(frame)
    if "test_nll_iwae_discretised_nats" in frame.columns and frame["test_nll_iwae_discretised_nats"].notna().any():
        items.append(DISCRETISED_NOTE)
    items.append(
        f"Latent analysis on the first {u('latent_n')} of the test images (evaluate.latent_n = "
        f"{c('evaluate.latent_n')}): rate = mean KL(q(z|x)||p(z)) = mutual information I(x; z) + marginal "
        "KL(q(z)||p(z)) of the aggregate posterior q(z) (Hoffman & Johnson 2016); I(x; z) <= log N for N images "
        "(a value above it is estimation noise); active units: latent dimensions whose posterior mean varies "
        "over the images with variance > 0.01 (Burda et al. 2016, Section 5.2).")
    items += fid_items(frame, datasets, c('evaluate.fid_n'), c('evaluate.fid_seeds'))
    items.append(
        "Paired comparisons: every pair of models that differ in exactly one component (architecture, "
        "latent_dim, posterior, likelihood or objective, name or settings) is compared over the seeds both "
        "have (paired by seed) and, per image, over the same test images: diff = mean over seeds of the "
        "per-image mean of A - B, with its standard errors over seeds (std of the per-seed differences / "
        "sqrt(S), which covers image sampling and training randomness) and over images (the image-sampling part "
        f"alone); the {LEVEL:.0%} CI is Student t over seeds (normal over images with a single seed), and the verdict "
        "names a better model only when the interval excludes 0, else 'inconclusive' (Dror et al. 2018). NLL "
        "and ELBO are compared only within one data space and between normalised densities; FID for every pair "
        "(per seed).")
    items.append("Flags: " + " ".join(f"{name.replace('_', ' ')}: {rule}" for name, rule in RULES.items()))
    items.append(f"Image grids: {c('evaluate.grid_n')} images per grid (evaluate.grid_n).")
    items += data_items(frame, datasets)
    return items


def likelihood_items(frame: pd.DataFrame) -> list[str]:
    """Per likelihood (registry name) of the study: its models, data treatment, what its number is a
    likelihood of, the bits/dim convention of its ``data_space``, and notes on ``sigma_mode`` /
    ``valid_density``."""
    items = []
    for lik in dict.fromkeys(frame["likelihood"].dropna().astype(str)):
        sub = frame[frame["likelihood"].astype(str) == lik]
        models = ", ".join(dict.fromkeys(sub["model"].astype(str)))
        spaces = list(dict.fromkeys(sub["data_space"].dropna().astype(str)))
        convention = " ".join(metric_spec.DATA_SPACES[s].bits_convention if s in metric_spec.DATA_SPACES else
                              f"data space '{s}': see the metrics files for the bits/dim convention." for s in spaces)
        items.append(f"'{lik}' decoders ({models}): {unique(sub, 'likelihood_description')}; data "
                     f"{unique(sub, 'data_treatment')}; likelihood of {unique(sub, 'likelihood_of')}; "
                     f"{convention}")
        modes = set(sub["sigma_mode"].dropna().astype(str))
        valid = not any(is_false(v) for v in sub["valid_density"].tolist())
        if "optimal_shared" in modes and valid:
            items.append(f"Optimal sigma ('{lik}'): at test time sigma^2 is the running average of the last "
                         "training epoch's MSE (fixed, so the test ELBO/NLL are normalised densities).")
        if not valid:
            why = ("each test image uses its own MSE as variance, so the variance depends on the image itself; "
                   if "optimal_per_image" in modes else "")
            items.append(f"'{lik}' ({models}): {why}its test ELBO, NLL and bits/dim are {NOT_A_DENSITY} "
                         "evaluation (valid_density = false); treat them as optimistic.")
    return items


def fid_items(frame: pd.DataFrame, datasets: list[str], fid_n_setting: str = "n/a",
              fid_seeds_setting: str = "n/a") -> list[str]:
    """Per dataset: the FID protocol and its classifier (accuracies, epochs, feature dimension) as recorded
    in the metrics files; for a dataset without a classifier, why its classifier-feature FID is unavailable."""
    items = []
    for d in datasets:
        sub = rows_of(frame, d)
        unavailable = fid_unavailable_text(sub)
        if unavailable:
            items.append(f"FID ({d}): classifier-feature FID {unavailable}. No number is reported in its place; "
                         "the likelihoods, latent analysis and sample grids are unaffected, and the Inception FID "
                         "(needs no labels) is given where its weights are present.")
            continue
        bits = [f"test accuracy {' / '.join(dict.fromkeys(accuracy_text(v) for v in sub['classifier_test_accuracy']))}"
                if "classifier_test_accuracy" in sub else "test accuracy n/a"]
        if "classifier_val_accuracy" in sub and any(accuracy_text(v) != "n/a" for v in sub["classifier_val_accuracy"]):
            vals = dict.fromkeys(accuracy_text(v) for v in sub["classifier_val_accuracy"] if accuracy_text(v) != "n/a")
            bits.append(f"validation accuracy {' / '.join(vals)}")
        if unique(sub, "classifier_epochs") != "n/a":
            bits.append(f"{unique(sub, 'classifier_epochs')} epoch(s)")
        if unique(sub, "classifier_feature_dim") != "n/a":
            bits.append(f"feature dimension {unique(sub, 'classifier_feature_dim')}")
        items.append(
            f"FID ({d}): Frechet distance in the feature space of a small CNN classifier trained on the {d} "
            f"training split ({', '.join(bits)}), between N = {unique(sub, 'fid_n')} prior samples "
            f"(evaluate.fid_n = {fid_n_setting}) and the statistics of the whole test split: "
            f"{unique(sub, 'fid_reference')}. The samples are decoder means of z ~ p(z), quantised to 8 bits, for "
            f"{unique(sub, 'fid_seeds')} sample seeds (evaluate.fid_seeds = {fid_seeds_setting}): a cell's FID is "
            "their mean and their std is the spread over sample seeds; the 'draws' column scores x ~ p(x|z) "
            "instead of the decoder mean (n/a where the decoder cannot be sampled without the data). The floor "
            f"is the FID of {unique(sub, 'fid_floor_n')} held-out real images (validation split) against the same "
            "statistics. FID values are only comparable at equal N with the same extractor, and are NOT "
            "comparable with the Inception-v3 FIDs of papers.")
    return items


def data_items(frame: pd.DataFrame, datasets: list[str]) -> list[str]:
    """Per dataset: the split (validation size) and subset caps, from the cells' ``cell.data`` records."""
    items = []
    for d in datasets:
        sub = rows_of(frame, d)
        if "cell.data.split_seed" in sub.columns and sub["cell.data.split_seed"].notna().any():
            # no official split (Frey Face): a seeded random split, stored in the prepared file
            text = (f"Data ({d}): no official split; a random split with numpy RandomState("
                    f"{unique(sub, 'cell.data.split_seed')}): test = {unique(sub, 'cell.data.n_test')} images, "
                    f"validation = {unique(sub, 'cell.data.n_validation')}, training = the rest (the indices are "
                    "stored in the prepared file).")
        else:
            text = (f"Data ({d}): test = the official test split; validation = the last "
                    f"{unique(sub, 'cell.data.n_validation')} images of the training split, training = the rest.")
        caps = {k: unique(sub, f"cell.data.{k}") for k in ("max_train", "max_validation", "max_test")}
        caps = {k: v for k, v in caps.items() if v != "n/a"}
        if caps:
            text += " Subset sizes: " + ", ".join(f"{k} = {v}" for k, v in caps.items()) + "."
        items.append(text)
    return items



def intro_text(datasets: list[str], models: list[str], seeds: list, n_cells: int) -> str:
    """The report's opening paragraph: the grid, what the numbers are and where the raw values live."""
    return (
        f"Grid: datasets {', '.join(datasets)}; models {', '.join(models)}; seeds {', '.join(map(str, seeds))} "
        f"({n_cells} cells). Values are the mean over training seeds ± the half-width of its {LEVEL:.0%} "
        "Student-t interval; with a single seed only the value is shown (std and interval are null in "
        "metrics.json). Likelihood-type numbers are nats per image (summed over all pixels "
        "of an image), in separate tables per data space; bits/dim are bits per dimension. Models that differ in "
        "one component are compared image by image and seed by seed (Paired comparisons), and the Flags say "
        "where a number should not be trusted. Per-cell values: summary.csv; aggregates, comparisons and flags: "
        "metrics.json. The protocol is stated at the end.")

