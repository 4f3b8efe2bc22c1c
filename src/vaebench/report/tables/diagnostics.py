"""The diagnostics as report text: L_k convergence, GECO settling, learned sigma, collapsed posteriors, FID
classifier and floor."""
from __future__ import annotations

import pandas as pd

from vaebench.report.flags import Diagnostics
from vaebench.report.format import num, plain


def lk_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """One sentence per L_k column of ``dataset`` flagged as not converged (or one saying none is)."""
    items = []
    for e in diagnostics.lk:
        if e["dataset"] != dataset or e["converged"]:
            continue
        se = [f"± {num(e['gap_se_images'], '.2g')} (SE over images)"] if e["gap_se_images"] is not None else []
        if e["gap_se_seeds"] is not None:
            se.append(f"± {num(e['gap_se_seeds'], '.2g')} (SE over seeds)")
        items.append(f"{e['model']} ({e['column']}): L_k - L_{{k/10}} = {num(e['gap_nats'], '.3g')} "
                     f"{' '.join(se)} nats/image with k = {plain(e['iwae_k'])}, above the tolerance "
                     f"{plain(e['tolerance_nats'])}: -L_k has not converged; its NLL and NLL differences "
                     "involving it may be bias of the bound (raise evaluate.iwae_k).")
    if not items:
        items.append("Every L_k converged (L_k - L_{k/10} within evaluate.lk_tolerance_nats).")
    return items


def geco_table(dataset: str, diagnostics: Diagnostics) -> pd.DataFrame:
    """Every GECO-trained cell of ``dataset`` (:func:`vaebench.report.flags.geco_status`): the constraint,
    kappa, the last C_ma and its threshold, lambda, its change over the last epoch, and whether it settled."""
    rows = []
    for e in diagnostics.geco:
        if e["dataset"] != dataset:
            continue
        rows.append({
            "model": e["model"], "seed": str(e["seed"]), "constraint": str(e["constraint"]),
            "kappa": num(e["kappa"], ".3g"), "C_ma (last)": num(e["c_ma"], ".4g"),
            "|C_ma| threshold": num(e["c_ma_threshold"], ".3g"), "lambda (last)": num(e["lambda"], ".4g"),
            "lambda one epoch earlier": num(e["lambda_previous"], ".4g"),
            "lambda change": "n/a" if e["lambda_change"] is None else f"{e['lambda_change']:.1%}",
            "settled": "yes" if e["settled"] else "NO: " + "; ".join(e["reasons"]),
        })
    return pd.DataFrame(rows)


def sigma_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """One sentence per cell of ``dataset`` whose learned shared sigma is not at its optimum (or one saying every
    one is; none for a dataset without a learned shared sigma)."""
    cells = [e for e in diagnostics.sigma if e["dataset"] == dataset]
    items = []
    for e in cells:
        head = f"{e['model']} seed {e['seed']}: log sigma {num(e['log_sigma'], '.3f')} at the end of training"
        if e["difference"] is None:
            items.append(f"{head}, no test MSE recorded: whether sigma converged is unknown; a claim that requires "
                         "it is not tested.")
        elif not e["converged"]:
            items.append(f"{head}, its optimum 1/2 log MSE {num(e['optimum'], '.3f')} (difference "
                         f"{num(e['difference'], '.3g')}, tolerance {plain(e['tolerance'])}): the learned sigma has "
                         "not converged; a claim that requires it is not tested.")
    if cells and not items:
        items.append("Every learned shared sigma is within the tolerance of its optimum, 1/2 log MSE.")
    return items


def collapse_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """One sentence per cell of ``dataset`` whose posterior collapsed (0 active units); none when no cell did."""
    return [f"{e['model']} seed {e['seed']}: 0 active units (test KL {num(e['kl'], '.3g')} nats): the posterior "
            "has collapsed, z carries no information about x." for e in diagnostics.collapse
            if e["dataset"] == dataset and e["collapsed"]]


def other_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """The FID classifier's accuracy check and the FID floor of ``dataset``, as sentences."""
    items = []
    for e in diagnostics.classifier:
        if e["dataset"] != dataset:
            continue
        if e.get("unavailable"):
            items.append(f"FID classifier: unavailable: {e['unavailable']}.")
        elif e["ok"] is False:
            items.append(f"FID classifier: test accuracy {num(e['test_accuracy'], '.4f')} < {e['threshold']:g}: "
                         "its features separate the classes poorly, so FID is a coarse distance here.")
        elif e["ok"]:
            items.append(f"FID classifier: test accuracy {num(e['test_accuracy'], '.4f')} >= {e['threshold']:g}.")
        else:
            items.append("FID classifier: no test accuracy recorded.")
    for e in diagnostics.fid_floor:
        if e["dataset"] == dataset and e.get("unavailable"):
            items.append(f"FID floor: unavailable: {e['unavailable']}.")
        elif e["dataset"] == dataset:
            items.append(f"FID floor: {num(e['floor'], '.2f')}, the FID of {plain(e['floor_n'])} held-out real "
                         f"images against the test statistics; model FIDs (N = {plain(e['fid_n'])}) cannot be "
                         "expected below it.")
    return items

