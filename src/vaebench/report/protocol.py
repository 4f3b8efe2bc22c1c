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


def render_items(template: str, **context) -> list[str]:
    """The paragraphs of text template ``template`` (under ``templates/``) rendered with ``context``, each
    paragraph's line breaks read as spaces."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("vaebench.report", "templates"), autoescape=False,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = env.get_template(template).render(**context)
    return [" ".join(p.split("\n")) for p in text.strip().split("\n\n") if p.strip()]


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
    """The stage settings of the cell records (``cell.train.*``, ``cell.evaluate.*``) shared by most models."""
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
    """The protocol as sentences: seeds and intervals, training, the test images, ELBO, -L_k and its diagnostic,
    per-likelihood conventions, latent analysis, FID, paired comparisons, flags, grids, data."""
    common, differing = common_settings(frame, models)
    c = lambda k: common.get(k, "n/a")  # noqa: E731
    u = lambda col, df=frame: unique(df, col)  # noqa: E731
    more = " (per-model differences below)" if differing else ""
    discretised = metric_spec.compared("nll_discretised").key
    has_discretised = discretised in frame.columns and frame[discretised].notna().any()
    return render_items("protocol.txt.j2", seeds=", ".join(map(str, seeds)), level=f"{LEVEL:.0%}", more=more,
                        c=c, u=u, likelihood_items=likelihood_items(frame),
                        discretised_note=DISCRETISED_NOTE if has_discretised else None,
                        fid_items=fid_items(frame, datasets, c("evaluate.fid_n"), c("evaluate.fid_seeds")),
                        flag_rules=[f"{name.replace('_', ' ')}: {rule}" for name, rule in RULES.items()],
                        data_items=data_items(frame, datasets))


def likelihood_items(frame: pd.DataFrame) -> list[str]:
    """Per likelihood (registry name) of the study: its models, data treatment, what its number is a likelihood of,
    the bits/dim convention of its ``data_space``, and notes on ``sigma_mode`` / ``valid_density``."""
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
    return render_items("intro.txt.j2", datasets=datasets, models=models, seeds=", ".join(map(str, seeds)),
                        n_cells=n_cells, level=f"{LEVEL:.0%}")[0]
