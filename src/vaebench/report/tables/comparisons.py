"""The comparison tables: paired differences, pairs not compared, published numbers, claim verdicts."""
from __future__ import annotations

import pandas as pd

import vaebench.report.published as published
from vaebench.report.collect import LEVEL
from vaebench.report.format import CI_TEXT, format_ci, missing, num, plain, rows_of, unique


def _verdict_text(row: dict) -> str:
    return f"{row['better']} better" if row.get("better") else str(row["verdict"])


def paired_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """The compared rows of :func:`vaebench.report.paired.paired_comparisons` for ``dataset``: A, B, the axis
    and its two values, the metric, A - B with its standard errors over seeds and over images, the 95%
    interval, the seeds and images used, the verdict (naming the better model) and notes (an L_k that has not
    converged, stage settings that also differ)."""
    out = []
    for r in rows:
        if r["dataset"] != dataset or not r["compared"]:
            continue
        notes = []
        if r["lk_not_converged"]:
            notes.append(f"L_k not converged for {', '.join(r['lk_not_converged'])}: the difference may be bias "
                         "of the bound")
        if r["other_differences"]:
            notes.append("also differ: " + "; ".join(r["other_differences"]))
        ci = (f"[{num(r['ci_low'], '.3g')}, {num(r['ci_high'], '.3g')}]"
              if r["ci_low"] is not None else "n/a")
        out.append({
            "A": r["model_a"], "B": r["model_b"],
            "differs in": f"{r['axis']}: {r['value_a']} vs {r['value_b']}",
            "metric": f"{r['metric_label']}, {'higher' if r['higher_is_better'] else 'lower'} is better",
            "A - B": num(r["diff"], ".3g"),
            "SE": num(r.get("se"), ".2g"),
            "SE (seeds)": num(r["se_seeds"], ".2g"),
            "SE (images)": num(r["se_images"], ".2g"),
            f"{LEVEL:.0%} CI of A - B": ci,
            "seeds": str(r["n_seeds"]),
            "images": "n/a" if r["n_images"] is None else str(r["n_images"]),
            "verdict": _verdict_text(r),
            "notes": "; ".join(notes) or "",
        })
    return pd.DataFrame(out)


def not_compared_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """The pairs of ``dataset`` with metrics that were not compared: A, B, the axis, the metrics and why
    (one row per pair and reason)."""
    grouped: dict[tuple, list[str]] = {}
    for r in rows:
        if r["dataset"] == dataset and not r["compared"]:
            key = (r["model_a"], r["model_b"], r["axis"], r["reason"])
            grouped.setdefault(key, []).append(r["metric"])
    return pd.DataFrame([{"A": a, "B": b, "differs in": axis, "metrics": ", ".join(ms), "why not": reason}
                         for (a, b, axis, reason), ms in grouped.items()])



def train_k(frame: pd.DataFrame, model: str) -> int:
    """Importance samples per image in ``model``'s training objective: ``objective_params.k`` (1 for a plain
    ELBO, i.e. when the objective has no ``k``)."""
    col = "objective_params.k"
    if col not in frame.columns:
        return 1
    values = [v for v in rows_of(frame, model=model)[col].tolist() if not missing(v)]
    return int(values[0]) if values else 1


def comparison_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean ± 95% CI over seeds) next to the published numbers of :mod:`vaebench.report.published` for the
    models of the study, one row per published number; empty when none concerns them."""
    ks = {m: train_k(frame, m) for m in models}
    rows = []
    for e in published.entries_for(dataset, models, ks):
        metric = published.PUBLISHED_METRICS[e["metric"]]
        stat = aggregate.get(dataset, {}).get(e["model"], {}).get(metric["ours"])
        spec = ".3g" if e["metric"] == "effective_beta" else ".2f"
        rows.append({
            "model": e["model"],
            "metric": metric["label"],
            f"ours ({CI_TEXT})": format_ci(stat, spec, metric["sign"]),
            "published": (e["bound"] or "") + plain(e["value"]),
            "published setting": e["setting"],
            "source": e["source"],
            "our protocol": _our_protocol(e["metric"], rows_of(frame, dataset, e["model"])),
            "protocol differences": e["protocol"],
        })
    return pd.DataFrame(rows)


def _our_protocol(metric: str, sub: pd.DataFrame) -> str:
    u = lambda c: unique(sub, c)  # noqa: E731
    if metric in ("neg_elbo_nats", "reported_loss_nats", "mean_kl_nats"):
        return (f"single-sample ELBO on {u('n_images')} fixed random test images; {u('data_treatment')}; "
                f"{u('epochs')} epoch(s)")
    if metric == "nll_nats":
        return (f"-L_k with k = {u('iwae_k')} on {u('n_images')} fixed random test images; likelihood of "
                f"{u('likelihood_of')}; {u('epochs')} epoch(s)")
    if metric == "fid":
        return f"classifier-feature FID, N = {u('fid_n')}: {u('fid_reference')}"
    if metric == "effective_beta":
        return f"effective beta at the end of training ({u('epochs')} epoch(s))"
    return ""


def comparison_notes(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Split the long, shared protocol notes out of a :func:`comparison_table`."""
    table = table.copy()
    notes = list(dict.fromkeys(table["protocol differences"]))
    table["protocol differences"] = [f"note {notes.index(n) + 1}" for n in table["protocol differences"]]
    used = [k for k in published.SOURCES if any(str(s).startswith(k) for s in table["source"])]
    return table, notes, [f"{k}: {published.SOURCES[k]}" for k in used]



def _claim_pair(r: dict) -> str:
    return f"{r['model_a']} vs {r['model_b']}" if r.get("model_a") else "n/a"


def verdict_table(rows: list[dict]) -> pd.DataFrame:
    """One row per checked claim x dataset x pair x metric (the rows of :func:`vaebench.report.claims.check_claims`):
    the claim, dataset, pair, metric (with its unit), what the paper claims, our paired difference A - B ± the
    half-width of its 95% interval with the interval itself, seeds, the published A and B where the paper gives
    both, and the verdict (with the reason when not tested, and the models whose L_k is flagged as not converged)."""
    from vaebench.report.claims import metric_label

    out = []
    for r in rows:
        if r["diff"] is None:
            ours = "n/a"
        elif r["ci_low"] is None:
            ours = f"{num(r['diff'], '.4g')} (no interval)"
        else:
            ours = f"{num(r['diff'], '.4g')} [{num(r['ci_low'], '.4g')}, {num(r['ci_high'], '.4g')}]"
        pub = "n/a"
        if r.get("published_a") is not None:
            pub = (f"{num(r['published_a'], '.4g')} vs {num(r['published_b'], '.4g')} "
                   f"(A - B = {num(r['published_diff'], '.4g')}; {r['published_source']})")
        verdict = r["verdict"]
        if r.get("reason"):
            verdict += f" ({r['reason']})"
        if r.get("lk_not_converged"):
            verdict += f"; L_k not converged: {r['lk_not_converged'].replace(';', ', ')}"
        out.append({"claim": r["claim"], "dataset": r["dataset"], "A vs B": _claim_pair(r),
                    "metric": metric_label(r["metric"]), "claimed": r["expected"],
                    f"ours: A - B [{LEVEL:.0%} CI]": ours, "seeds": "n/a" if not r.get("n_seeds") else str(int(r["n_seeds"])),
                    "published A vs B": pub, "verdict": verdict})
    return pd.DataFrame(out)


def verdict_counts(rows: list[dict]) -> str:
    """'N checks: a reproduced, b not reproduced, c inconclusive, d not tested'."""
    from vaebench.report.claims import VERDICTS

    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return f"{len(rows)} checks: " + ", ".join(f"{n} {v}" for v, n in counts.items())
