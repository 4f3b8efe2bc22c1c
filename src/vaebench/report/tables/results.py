"""The results tables: what each model is, likelihoods per data space, latent analysis, FID, training."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from vaebench.metrics import spec as metric_spec
from vaebench.report.flags import Diagnostics
from vaebench.report.format import (CI_TEXT, NOT_A_DENSITY, drop_empty, fid_unavailable_text, format_ci, is_false,
                                    missing, num, params_text, plain, rows_of, unique)

DISCRETISED_NOTE = (
    "Discretised columns: the same decoder scored as a discrete likelihood of the 8-bit test image, the "
    "probability of each pixel's bin [v/256, (v+1)/256) under the decoder's Gaussian (edge bins open; Salimans "
    "et al. 2017, eq. 2), from the same posterior samples; bits/dim = NLL / (D ln 2) with no offset. A true "
    "likelihood of the 8-bit data, comparable with a categorical decoder's, unlike the dequantisation bound.")


LIKELIHOOD_LAYOUT = ("test_elbo_nats", "test_recon_nats", "test_kl_nats", "test_nll_iwae_nats", "lk_gap", "bits_per_dim",
                     "test_elbo_discretised_nats", "test_nll_iwae_discretised_nats", "lk_gap_discretised",
                     "bits_per_dim_discretised")
LATENT_LAYOUT = ("latent_rate_nats", "latent_marginal_kl_nats", "latent_mutual_info_nats", "latent_log_n",
                 "active_units")
TRAINING_LAYOUT = ("effective_beta", "beta_convention", "log_sigma", "lambda", "geco_constraint_ma", "train_seconds")


def metric_columns(table: str, layout: tuple[str, ...], stats: dict, special: dict[str, tuple[str, str]],
                   context: dict | None = None) -> dict[str, str]:
    """One row's cells of results table ``table``: the names of ``layout`` in order (a metric declared for the
    table, as mean ± CI over seeds under its header formatted with ``context``, or a ``special`` name:
    (header, text)), then every other metric declared for the table."""
    declared = {m.key: m for m in metric_spec.table_metrics(table)}
    out = {}
    for name in list(layout) + [k for k in declared if k not in layout]:
        if name in special:
            header, text = special[name]
            out[header] = text
        elif name in declared:
            metric = declared[name]
            out[metric.column.format(**(context or {}))] = format_ci(stats.get(name), metric.fmt)
    return out


def space_title(space: str) -> str:
    """The declared title of a data space (its name when undeclared)."""
    return metric_spec.DATA_SPACES[space].title if space in metric_spec.DATA_SPACES else space


def space_short(space: str) -> str:
    """The declared short name of a data space (its name when undeclared)."""
    return metric_spec.DATA_SPACES[space].short if space in metric_spec.DATA_SPACES else space


def bits_convention(space: str) -> str:
    """How bits/dim relate to the NLL in a data space ('' when undeclared)."""
    return metric_spec.DATA_SPACES[space].bits_convention if space in metric_spec.DATA_SPACES else ""


def models_table(dataset: str, models: list[str], frame: pd.DataFrame) -> pd.DataFrame:
    """What each model of ``dataset`` is: architecture, latent size, posterior, likelihood, objective, their
    settings (from the ``*_params`` fields), data treatment and what the test number is a likelihood of."""
    rows = []
    for m in models:
        sub = rows_of(frame, dataset, m)
        settings = []
        for axis in ("architecture", "posterior", "likelihood", "objective"):
            text = params_text(sub, f"{axis}_params")
            if text:
                settings.append(f"{axis}: {text}")
        rows.append({
            "model": m,
            "architecture": unique(sub, "architecture"),
            "latent_dim": unique(sub, "latent_dim"),
            "posterior": unique(sub, "posterior"),
            "likelihood": unique(sub, "likelihood"),
            "objective": unique(sub, "objective"),
            "settings": "; ".join(settings) or "defaults",
            "data_treatment": unique(sub, "data_treatment"),
            "likelihood_of": unique(sub, "likelihood_of"),
        })
    return pd.DataFrame(rows)


def n_seeds(aggregate: dict, dataset: str, model: str) -> int:
    """The most seeds any metric of ``model`` on ``dataset`` was averaged over (0 when none)."""
    return max((s.get("n_seeds", 0) for s in aggregate.get(dataset, {}).get(model, {}).values()), default=0)


def space_groups(dataset: str, models: list[str], frame: pd.DataFrame) -> dict[str, list[str]]:
    """``{data_space: [models of dataset]}`` from the ``data_space`` field, spaces in the spec's declaration order
    (others after, in order of appearance), models in grid order; a model whose cells disagree is put under
    its first cell's space."""
    groups: dict[str, list[str]] = {}
    for m in models:
        spaces = [str(v) for v in rows_of(frame, dataset, m)["data_space"].tolist() if not missing(v)]
        if spaces:
            groups.setdefault(spaces[0], []).append(m)
    declared = list(metric_spec.DATA_SPACES)
    order = [s for s in declared if s in groups] + [s for s in groups if s not in declared]
    return {s: groups[s] for s in order}


def is_invalid_density(frame: pd.DataFrame, dataset: str, model: str) -> bool:
    """Whether any cell of ``model`` on ``dataset`` records ``valid_density = false``."""
    return any(is_false(v) for v in rows_of(frame, dataset, model)["valid_density"].tolist())


def model_label(frame: pd.DataFrame, dataset: str, model: str) -> str:
    """The model's name, with '(not a normalised density)' when its likelihood is not one."""
    return f"{model} ({NOT_A_DENSITY})" if is_invalid_density(frame, dataset, model) else model


def gap_text(entry: dict | None, spec: str = ".2f") -> str:
    """The L_k - L_{k/10} diagnostic of a :func:`vaebench.report.flags.lk_status` entry: 'gap ± SE over
    images', then 'NOT CONVERGED (> tolerance)' when flagged; 'n/a' without an entry."""
    if entry is None or entry.get("gap_nats") is None:
        return "n/a"
    text = num(entry["gap_nats"], spec)
    if entry.get("gap_se_images") is not None:
        text += " ± " + num(entry["gap_se_images"], spec)
    if not entry["converged"]:
        text += f" NOT CONVERGED (> {plain(entry['tolerance_nats'])})"
    return text



def likelihood_table(dataset: str, space: str, models: list[str], aggregate: dict, frame: pd.DataFrame,
                     diagnostics: Diagnostics) -> pd.DataFrame:
    """The likelihood results of the models of one data space: mean ± 95% CI over seeds of the ELBO and -L_k, the
    ELBO's terms, the L_k - L_{k/10} diagnostic (± SE over images, flagged when above the tolerance) and bits/dim;
    for decoders with a discretised column, the same quantities of the discrete 8-bit likelihood side by side."""
    agg = aggregate.get(dataset, {})
    sub = rows_of(frame, dataset)
    sub = sub[sub["model"].isin(models)]
    ks = "/".join(dict.fromkeys(plain(k) for k in sub["iwae_k"].dropna())) or "n/a"
    context = {"space": space_short(space), "k": ks, "ci": CI_TEXT}
    rows = []
    for m in models:
        special = {"lk_gap": ("L_k - L_{k/10} (nats/image)", gap_text(diagnostics.lk_entry(dataset, m, "L_k"))),
                   "lk_gap_discretised": ("discretised L_k - L_{k/10}",
                                          gap_text(diagnostics.lk_entry(dataset, m, "L_k_discretised")))}
        rows.append({"model": model_label(frame, dataset, m), "seeds": str(n_seeds(aggregate, dataset, m)),
                     **metric_columns("likelihood", LIKELIHOOD_LAYOUT, agg.get(m, {}), special, context)})
    return drop_empty(pd.DataFrame(rows))


VIDEO_UNITS_NOTE = (
    "Videos: every 'per image' quantity above is per test sequence, the sum over its T - 1 frames after the first "
    "(the first frame is conditioned on, not scored); bits/dim divide by the dimensions of those T - 1 frames.")
VIDEO_TABLE_NOTE = (
    "SVG's evaluation (Denton & Fergus 2018, Section 4): for each test sequence, N continuations of its first n_past "
    "frames sampled from the learned prior, each predicted frame scored against the true one by SSIM (7x7 uniform "
    "window, data range 1: SVG's scikit-image defaults, computed with torchmetrics) and PSNR; best of N takes the "
    f"per-frame maximum over the N samples, then the mean over frames and sequences [{CI_TEXT}]; best sample: the "
    "one continuation of highest mean SSIM; one sample: the mean over samples. Per-frame curves: the figure above.")
VIDEO_FID_LATENT_NOTE = ("Frame FID: the Inception FID of the predicted frames of each test sequence's first continuation "
                 "against every test frame, where the study computes Inception statistics (evaluate.inception). "
                 "Rate: E_x sum_t KL(q(z_t | x_<=t) || p(z_t | x_<t)) per test sequence. Active units against the "
                 "learned prior: latent dimensions whose posterior mean departs from the prior's, in prior standard "
                 "deviations, with variance above 0.01 over the test frames (Burda et al.'s criterion; 0 means the "
                 "posterior adds nothing to the past frames). No mutual information or marginal KL: they need one "
                 "q(z|x) per sequence against a fixed prior.")
VIDEO_LAYOUT = ("test_elbo_per_frame_nats", "ssim_best", "psnr_best", "ssim_best_sample", "psnr_best_sample",
                "ssim_sample", "psnr_sample", "latent_rate_nats", "active_units")


def is_video(sub: pd.DataFrame) -> bool:
    """Whether the records of ``sub`` are of sequence models (a ``scored_frames`` value)."""
    return "scored_frames" in sub.columns and sub["scored_frames"].notna().any()


def video_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Video prediction per model (mean ± 95% CI over seeds): the ELBO per scored frame, the best-of-N, best
    sample and one-sample SSIM and PSNR, the rate (KL to the learned prior per sequence) and active units against
    that prior, the frame FID (or why none), with N, n_past and the predicted frames."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        sub, a = rows_of(frame, dataset, m), agg.get(m, {})
        special = {
            "latent_rate_nats": ("rate: KL to the learned prior (nats/sequence)", format_ci(a.get("latent_rate_nats"), ".2f")),
            "active_units": ("active units against the learned prior / latent_dim",
                             (format_ci(a.get("active_units"), ".1f") + " / " + unique(sub, "latent_dim"))
                             if a.get("active_units") else "n/a")}
        rows.append({"model": model_label(frame, dataset, m), "seeds": str(n_seeds(aggregate, dataset, m)),
                     **metric_columns("video", VIDEO_LAYOUT, a, special, {"ci": CI_TEXT}),
                     "Inception FID of frames (N predicted / N test)": (
                         f"{format_ci(a.get('fid_inception'), '.2f')} ({unique(sub, 'fid_inception_n')} "
                         f"/ {unique(sub, 'fid_inception_reference_n')})" if a.get("fid_inception")
                         else unique(sub, "fid_inception_status")),
                     "N samples / n_past / predicted frames": (f"{unique(sub, 'video_samples')} / "
                                                               f"{unique(sub, 'n_past')} / "
                                                               f"{unique(sub, 'predicted_frames')}")})
    return drop_empty(pd.DataFrame(rows))


def has_discretised(dataset: str, models: list[str], aggregate: dict) -> bool:
    """Whether any of ``models`` has a discretised likelihood column on ``dataset``."""
    return any("test_nll_iwae_discretised_nats" in aggregate.get(dataset, {}).get(m, {}) for m in models)


def latent_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Latent analysis per model (mean ± 95% CI over seeds): rate = E_x KL(q(z|x)||p(z)), the marginal KL
    KL(q(z)||p(z)) of the aggregate posterior, the mutual information I(x; z) = rate - marginal KL with its
    upper bound log N (N = images of the aggregate posterior), and the active units out of latent_dim."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        a, sub = agg.get(m, {}), rows_of(frame, dataset, m)
        bound = unique(sub, "latent_log_n_nats", ".2f")
        special = {
            "latent_log_n": ("log N, bound on MI (N)", f"{bound} ({unique(sub, 'latent_n')})" if bound != "n/a" else "n/a"),
            "active_units": ("active units / latent_dim", (format_ci(a.get("active_units"), ".1f") + " / "
                             + unique(sub, "latent_dim")) if a.get("active_units") else "n/a")}
        rows.append({"model": m, "seeds": str(n_seeds(aggregate, dataset, m)),
                     **metric_columns("latent", LATENT_LAYOUT, a, special),
                     "per layer, bottom first: rate (nats); active units / dims (mean over seeds)": per_layer_text(sub)})
    return drop_empty(pd.DataFrame(rows))


def per_layer_text(sub: pd.DataFrame) -> str:
    """'r_1 | .. | r_L; a_1/d_1 | .. | a_L/d_L' of a hierarchical model's cells (rate per layer in nats and active
    units per layer, each the mean over the cells), 'n/a' for a model with one stochastic layer."""
    if "latent_rate_per_layer_nats" not in sub.columns:
        return "n/a"
    cells = sub.dropna(subset=["latent_rate_per_layer_nats"])
    if cells.empty:
        return "n/a"
    lists = {k: [json.loads(v) for v in cells[k]]           # the frame holds lists as JSON text
             for k in ("latent_rate_per_layer_nats", "active_units_per_layer", "latent_dims_per_layer")}
    rates = np.mean(np.array(lists["latent_rate_per_layer_nats"], dtype=float), axis=0)
    active = np.mean(np.array(lists["active_units_per_layer"], dtype=float), axis=0)
    dims = lists["latent_dims_per_layer"][0]
    return (" | ".join(f"{r:.2f}" for r in rates) + "; "
            + " | ".join(f"{a:.1f}/{int(d)}" for a, d in zip(active, dims)))


def fid_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """FID per model: of decoder means, mean ± 95% CI over training seeds (each seed's value is itself the mean over
    ``fid_seeds`` sample seeds); its spread over sample seeds (std, mean over training seeds); the FID of draws x ~
    p(x|z); the dataset's floor (real held-out images) and N, the same images blurred and uniform noise scored the
    same way (the scale of the feature space); the Inception FID of the first sample seed against
    the whole test split with both N, or why it was not computed."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        a, sub = agg.get(m, {}), rows_of(frame, dataset, m)
        unavailable = fid_unavailable_text(sub)
        floor = num((a.get("fid_floor") or {}).get("mean"), ".2f")   # one reference per dataset: no spread
        rows.append({
            "model": m,
            "seeds": str(n_seeds(aggregate, dataset, m)),
            f"FID, decoder means [{CI_TEXT}]": unavailable or format_ci(a.get("fid_classifier"), ".2f"),
            "std over sample seeds (sample seeds)": (
                f"{num(a['fid_classifier_std']['mean'], '.2f')} ({unique(sub, 'fid_seeds')})"
                if (a.get("fid_classifier_std") or {}).get("mean") is not None else "n/a"),
            "FID, draws x ~ p(x|z)": format_ci(a.get("fid_classifier_draws"), ".2f"),
            "floor (N real images)": (f"{floor} ({unique(sub, 'fid_floor_n')})" if floor != "n/a" else
                                      "unavailable" if unavailable else "n/a"),
            "same images blurred (5x5)": num((a.get("fid_blurred_reference") or {}).get("mean"), ".2f"),
            "uniform noise": num((a.get("fid_noise_reference") or {}).get("mean"), ".2f"),
            "N (samples)": unique(sub, "fid_n"),
            "Inception FID (N samples / N test)": (
                f"{format_ci(a.get('fid_inception'), '.2f')} ({unique(sub, 'fid_inception_n')} / "
                f"{unique(sub, 'fid_inception_reference_n')})" if a.get("fid_inception") else
                unique(sub, "fid_inception_status")),
            **metric_columns("fid", (), a, {}),
        })
    return drop_empty(pd.DataFrame(rows))


def beta_convention(dataset: str, model: str, aggregate: dict) -> str:
    """How ``effective_beta`` relates to the model, from which fields it has: 1/lambda for a GECO model
    (a ``lambda`` and an ``effective_beta``), 2 sigma^2 beta for a shared-sigma Gaussian decoder (an
    ``effective_beta`` without ``lambda``), none for GECO+IWAE (``lambda`` without ``effective_beta``)."""
    a = aggregate.get(dataset, {}).get(model, {})
    tracked = metric_spec.TRACKED
    has_beta, has_lambda = tracked["effective_beta"].record_key in a, tracked["lambda"].record_key in a
    if has_beta and has_lambda:
        return "1/lambda (GECO: KL + lambda SSE)"
    if has_beta:
        return "2 sigma^2 beta (shared-sigma Gaussian)"
    if has_lambda:
        return "none: the loss weighs no KL (lambda shown)"
    return "n/a"


def training_table(dataset: str, models: list[str], aggregate: dict) -> pd.DataFrame:
    """Per model (mean ± 95% CI over seeds, at the end of training): the effective beta in the "SSE + beta KL"
    convention with the rule that gives it (:func:`beta_convention`), the decoder's log sigma, GECO's lambda
    and constraint moving average C_ma, and the training time."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        special = {"beta_convention": ("beta convention", beta_convention(dataset, m, aggregate))}
        rows.append({"model": m, "seeds": str(n_seeds(aggregate, dataset, m)),
                     **metric_columns("training", TRAINING_LAYOUT, agg.get(m, {}), special)})
    return drop_empty(pd.DataFrame(rows))


def invalid_density_models(dataset: str, models: list[str], frame: pd.DataFrame) -> list[str]:
    """Models of ``dataset`` whose likelihood is flagged ``valid_density = false`` in any cell."""
    out = []
    for m in models:
        if any(is_false(f) for f in rows_of(frame, dataset, m)["valid_density"].tolist()):
            out.append(m)
    return out


def density_note(models: list[str], frame: pd.DataFrame) -> str:
    """The warning under a results table for models whose test numbers are not a normalised density."""
    liks = " / ".join(dict.fromkeys(unique(frame[frame["model"] == m], "likelihood") for m in models))
    return (f"{', '.join(models)} ({liks}): the test ELBO, NLL and bits/dim are {NOT_A_DENSITY} of the test "
            "images (valid_density = false; see the protocol); they are shown for completeness, treated as "
            "optimistic and left out of every likelihood comparison.")



SETTINGS_COLUMNS = ["dataset", "model", "data_treatment", "likelihood_of", "valid_density", "n_images", "iwae_k",
                    "lk_tolerance_nats", "latent_n", "fid_n", "fid_seeds", "fid_reference", "epochs", "device"]


def evaluation_settings_table(frame: pd.DataFrame, datasets: list[str], models: list[str]) -> pd.DataFrame:
    """One row per dataset x model: the evaluation settings as recorded in its metrics files."""
    rows = []
    for d in datasets:
        for m in models:
            sub = rows_of(frame, d, m)
            rows.append({c: (d if c == "dataset" else m if c == "model" else unique(sub, c))
                         for c in SETTINGS_COLUMNS})
    return pd.DataFrame(rows, columns=SETTINGS_COLUMNS)

