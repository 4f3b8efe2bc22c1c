"""The seed papers' claims (claims.yaml) checked on every dataset of a study: verdicts with their intervals."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from vaebench import paths
import vaebench.report.published as published
from vaebench.metrics import spec
from vaebench.report.paired import COMPARED_AXES, compare_metric, pair_base, single_axis_pairs

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
NOT_IN_STUDY = "not in the study"      # the start of the reason of a row whose models the study does not have


OUT_OF_SCOPE = "outside the claim's scope"    # the start of the reason of a row on a dataset the source excludes


def split_absent(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows that test a claim on this study, rows that cannot apply to it: models it does not have, or a dataset
    outside the claim's scope), each in the given order."""
    absent = [r for r in rows if str(r.get("reason") or "").startswith((NOT_IN_STUDY, OUT_OF_SCOPE))]
    return [r for r in rows if r not in absent], absent


def absent_text(absent: list[dict]) -> str:
    """One sentence naming the claims left out because the study lacks their models (empty for none)."""
    if not absent:
        return ""
    claims = list(dict.fromkeys(r["claim_id"] for r in absent))
    return (f"{len(absent)} comparison(s) of {len(claims)} claim(s) concern models this study does not have or "
            f"datasets outside the claim's scope, so they are not shown ({', '.join(claims)}; all are in claims.csv).")
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED)
# Columns of reports/claims.csv, in order.
COLUMNS = ["claim_id", "claim", "dataset", "model_a", "model_b", "metric", "expected", "diff", "ci_low",
           "ci_high", "level", "n_seeds", "se", "se_seeds", "se_images", "n_images", "published_a", "published_b",
           "published_diff", "published_source", "verdict", "reason", "lk_not_converged", "source", "note"]
# Our comparison metric -> (published metric of vaebench.report.published, sign turning it into ours).
PUBLISHED_METRIC = {"nll": ("nll_nats", 1.0), "elbo": ("neg_elbo_nats", -1.0), "fid": ("fid", 1.0),
                    "kl": ("mean_kl_nats", 1.0)}

ComparedMetric = Literal[tuple(spec.compared_names())]  # type: ignore[valid-type]


class EqualWithin(BaseModel):
    """A claim that A and B agree: |A - B| <= ``equal_within`` in the metric's units."""

    model_config = ConfigDict(extra="forbid")
    equal_within: PositiveFloat


class NonInferior(BaseModel):
    """A claim that A is not worse than B by more than ``noninferior`` in the metric's units (one-sided)."""

    model_config = ConfigDict(extra="forbid")
    noninferior: PositiveFloat


Expectation = Union[Literal["better", "worse"], EqualWithin, NonInferior]
Precondition = Literal["learned_sigma_converged", "geco_settled", "lk_converged", "not_collapsed", "fid_informative"]
# Which compared metrics a precondition gates (None: every metric of the claim).
GATES: dict[str, tuple[str, ...] | None] = {"learned_sigma_converged": None, "geco_settled": None,
                                            "lk_converged": ("nll", "nll_discretised"), "not_collapsed": None,
                                            "fid_informative": ("fid",)}


class Comparison(BaseModel):
    """Model(s) A against model(s) B: named (``a``, ``b``: a model or a list, every A x B pair) or selected by
    ``axis`` (every single-axis pair of the study whose A has component ``a_value`` and B ``b_value``)."""

    model_config = ConfigDict(extra="forbid")
    a: list[str] | str | None = None
    b: list[str] | str | None = None
    axis: Literal[COMPARED_AXES] | None = None  # type: ignore[valid-type]
    a_value: str | None = None
    b_value: str | None = None
    metrics: dict[ComparedMetric, Expectation] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_way(self):
        named, by_axis = self.a is not None or self.b is not None, self.axis is not None
        if named == by_axis:
            raise ValueError("give either 'a' and 'b' (models) or 'axis' with 'a_value' and 'b_value'")
        if named and (self.a is None or self.b is None):
            raise ValueError("'a' and 'b' are both required")
        if by_axis and (self.a_value is None or self.b_value is None):
            raise ValueError("'axis' needs 'a_value' and 'b_value' (component names)")
        return self

    def models(self) -> tuple[list[str], list[str]]:
        """The named models: (A list, B list); empty for an axis selection."""
        as_list = lambda v: [] if v is None else [v] if isinstance(v, str) else list(v)  # noqa: E731
        return as_list(self.a), as_list(self.b)


class Claim(BaseModel):
    """One claim of a paper: its text, source, an optional note (protocol caveats), the datasets the source states
    it for (``scope``; None: any), the epochs of the source's training protocol (``min_epochs``: every compared
    model must have trained at least that long; a mapping gives each named model its own protocol, e.g. the
    Taming-VAEs beta-VAE 100 and GECO 200 epochs, and leaves unnamed models free), the other preconditions its evidence needs (``requires``) and
    its comparisons."""

    model_config = ConfigDict(extra="forbid")
    claim: str = Field(min_length=1)
    source: str = Field(min_length=1)
    note: str | None = None
    scope: list[str] | None = None
    min_epochs: PositiveInt | dict[str, PositiveInt] | None = None
    requires: list[Precondition] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(min_length=1)


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claims: dict[str, Claim] = Field(min_length=1)


def load_claims(path: str | os.PathLike = paths.CLAIMS, catalogue: set[str] | None = None) -> dict[str, Claim]:
    """The claims of ``path`` in file order, ``{claim_id: Claim}``.

    Raises:
        FileNotFoundError: no such file.
        vaebench.config.ConfigError: invalid YAML or an invalid entry, naming the file and the dotted key
            (e.g. ``claims.iwae_beats_vae.comparisons.0.metrics.nll``), or a model not in ``catalogue``.
    """
    from vaebench.config import ConfigError

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        parsed = ClaimsFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: invalid claim at '{key}': {err['msg']} (got {err.get('input')!r})") from None
    if catalogue is not None:
        for cid, claim in parsed.claims.items():
            for i, comp in enumerate(claim.comparisons):
                a, b = comp.models()
                unknown = [m for m in a + b if m not in catalogue]
                if unknown:
                    raise ConfigError(f"{path}: claims.{cid}.comparisons.{i} names model '{unknown[0]}', which is "
                                      f"not in the catalogue (defined: {', '.join(sorted(catalogue))})")
            unknown = [m for m in (claim.min_epochs if isinstance(claim.min_epochs, dict) else {}) if m not in catalogue]
            if unknown:
                raise ConfigError(f"{path}: claims.{cid}.min_epochs names model '{unknown[0]}', which is not in the "
                                  f"catalogue (defined: {', '.join(sorted(catalogue))})")
    return parsed.claims


def expected_text(expectation: Expectation) -> str:
    """What the claim says of A - B, as text: 'A better', 'A worse', '|A - B| <= m' or 'A not worse by > m'."""
    if isinstance(expectation, EqualWithin):
        return f"|A - B| <= {expectation.equal_within:g}"
    if isinstance(expectation, NonInferior):
        return f"A not worse by more than {expectation.noninferior:g}"
    return f"A {expectation}"


def verdict(expectation: Expectation, row: dict) -> str:
    """The claim's verdict from a comparison row of :func:`vaebench.report.paired.compare_metric` (rules in
    docs/report.md)."""
    if not row["compared"]:
        return NOT_TESTED
    lo, hi = row["ci_low"], row["ci_high"]
    if isinstance(expectation, NonInferior):
        if lo is None or hi is None:
            return INCONCLUSIVE
        m = expectation.noninferior
        worst, best = (lo, hi) if row["higher_is_better"] else (-hi, -lo)     # A's advantage over B
        return REPRODUCED if worst > -m else NOT_REPRODUCED if best < -m else INCONCLUSIVE
    if isinstance(expectation, EqualWithin):
        m = expectation.equal_within
        if lo is None or hi is None:
            return INCONCLUSIVE
        if -m <= lo and hi <= m:
            return REPRODUCED
        return NOT_REPRODUCED if (lo > m or hi < -m) else INCONCLUSIVE
    if row["verdict"] not in ("A better", "B better"):
        return INCONCLUSIVE
    a_better = row["verdict"] == "A better"
    return REPRODUCED if a_better == (expectation == "better") else NOT_REPRODUCED


def borderline(expectation: Expectation, row: dict) -> bool:
    """Whether the verdict of a judged row would change if the difference moved by one standard error (``se``): the
    interval's bound nearest a deciding boundary (0 for better/worse, -m for non-inferiority, +-m for equivalence)
    lies within one SE of it. A rerun on another machine moves the difference within its interval, so such a
    verdict is reported as borderline rather than trusted to survive."""
    lo, hi, se = row.get("ci_low"), row.get("ci_high"), row.get("se")
    if not row.get("compared") or lo is None or hi is None or not se:
        return False
    if isinstance(expectation, NonInferior):
        edges = [-expectation.noninferior if row["higher_is_better"] else expectation.noninferior]
    elif isinstance(expectation, EqualWithin):
        edges = [-expectation.equal_within, expectation.equal_within]
    else:
        edges = [0.0]
    return any(min(abs(lo - e), abs(hi - e)) < se for e in edges)


def _published(dataset: str, a: str, b: str, metric: str, train_k: dict[str, int]) -> dict:
    """Published A and B values of ``metric`` from one source (None when the paper gives no pair)."""
    out = {"published_a": None, "published_b": None, "published_diff": None, "published_source": None}
    if metric not in PUBLISHED_METRIC:
        return out
    name, sign = PUBLISHED_METRIC[metric]
    entries = [e for e in published.entries_for(dataset, [a, b], train_k) if e["metric"] == name]
    for ea in (e for e in entries if e["model"] == a):
        eb = next((e for e in entries if e["model"] == b and e["source"] == ea["source"]), None)
        if eb is not None:
            va, vb = sign * ea["value"], sign * eb["value"]
            return {"published_a": va, "published_b": vb, "published_diff": va - vb,
                    "published_source": ea["source"]}
    return out


def _pairs(comp: Comparison, dataset: str, models: list[str], records: dict[str, dict]) -> list[tuple]:
    """(A, B, reason) for one comparison on one dataset; reason says why the pair is not tested (else None)."""
    if comp.axis is None:
        a_list, b_list = comp.models()
        out = []
        for a in a_list:
            for b in b_list:
                missing = [m for m in (a, b) if m not in records]
                out.append((a, b, f"{NOT_IN_STUDY} on {dataset}: {', '.join(missing)}" if missing else None))
        return out
    pairs = [(a, b) for a, b, axis in single_axis_pairs(records, models) if axis == comp.axis]
    out = []
    for a, b in pairs:
        va, vb = records[a][comp.axis], records[b][comp.axis]
        if (va, vb) == (comp.a_value, comp.b_value):
            out.append((a, b, None))
        elif (va, vb) == (comp.b_value, comp.a_value):
            out.append((b, a, None))
    if not out:
        return [(None, None, f"{NOT_IN_STUDY} on {dataset}: no two of its models differ only in {comp.axis} "
                             f"({comp.a_value} vs {comp.b_value})")]
    return out


def _g(value) -> str:
    """A number in 3-4 significant digits, 'n/a' for None."""
    return "n/a" if value is None else f"{value:.4g}"


def _model_text(model: str, seeds: list) -> str:
    return f"{model} seed{'s' if len(seeds) > 1 else ''} {', '.join(str(x) for x in seeds)}"


def failed_precondition(name: str, dataset: str, models: tuple[str, str], metric: str, diagnostics,
                        cells: dict[str, dict[int, object]]) -> str | None:
    """Why precondition ``name`` fails for ``models`` on ``dataset`` (with the numbers), or None when it holds or
    does not gate ``metric``; read from the report's diagnostics (:mod:`vaebench.report.flags`)."""
    from vaebench.report.collect import is_number

    gates = GATES[name]
    if gates is not None and metric not in gates:
        return None
    if name == "learned_sigma_converged":
        bad = [e for e in diagnostics.sigma if e["dataset"] == dataset and e["model"] in models and not e["converged"]]
        return None if not bad else "learned sigma not converged: " + "; ".join(
            f"{e['model']} seed {e['seed']}: log sigma {_g(e['log_sigma'])} vs its optimum 1/2 log MSE "
            f"{_g(e['optimum'])} (|difference| > {e['tolerance']:g})" if e["difference"] is not None else
            f"{e['model']} seed {e['seed']}: no test MSE recorded" for e in bad)
    if name == "geco_settled":
        bad = [e for e in diagnostics.geco if e["dataset"] == dataset and e["model"] in models and not e["settled"]]
        return None if not bad else "GECO not settled: " + "; ".join(
            f"{e['model']} seed {e['seed']} ({e['state']}): {'; '.join(e['reasons'])}" for e in bad)
    if name == "lk_converged":
        column = "L_k_discretised" if metric == "nll_discretised" else "L_k"
        bad = [diagnostics.lk_entry(dataset, m, column) for m in models if diagnostics.not_converged(dataset, m, column)]
        return None if not bad else "L_k not converged: " + "; ".join(
            f"{e['model']}: L_k - L_(k/10) = {_g(e['gap_nats'])} > {_g(e['tolerance_nats'])} nats (k = {e['iwae_k']})"
            for e in bad)
    if name == "not_collapsed":
        bad: dict[str, list] = {}
        for e in diagnostics.collapse:
            if e["dataset"] == dataset and e["model"] in models and e["collapsed"]:
                bad.setdefault(e["model"], []).append(e)
        return None if not bad else "posterior collapsed (0 active units): " + "; ".join(
            f"{_model_text(m, [e['seed'] for e in es])} (test KL {_g(es[0]['kl'])} nats)" for m, es in bad.items())
    if name == "fid_informative":
        clf = next((e for e in diagnostics.classifier if e["dataset"] == dataset), None)
        if clf is not None and clf.get("ok") is False:
            return (f"FID not informative: the classifier's test accuracy {_g(clf['test_accuracy'])} < "
                    f"{clf['threshold']:g}")
        ref = next((e for e in diagnostics.fid_floor if e["dataset"] == dataset), {})
        blur = ref.get("blurred")
        fids = {m: [c.record.get("fid_classifier") for c in cells[m].values()] for m in models}
        means = {m: sum(v) / len(v) for m, v in fids.items() if v and all(is_number(x) for x in v)}
        if blur is not None and len(means) == 2 and all(v >= blur for v in means.values()):
            return ("FID not informative: both models score no better than the blurred held-out images "
                    f"(FID {blur:.4g}): " + ", ".join(f"{m} {v:.4g}" for m, v in means.items()))
        return None
    raise KeyError(name)


def short_training(min_epochs: int | dict[str, int] | None, models: tuple[str, str],
                   cells: dict[str, dict[int, object]]) -> str | None:
    """Why the compared models were not trained to the source's protocol (fewer than ``min_epochs`` epochs in some
    seed; a mapping gives each model its own minimum), with the epochs each had; None when they were or no
    protocol is given."""
    if min_epochs is None:
        return None
    need = {m: (min_epochs.get(m) if isinstance(min_epochs, dict) else min_epochs) for m in models}
    short = {}
    for m in models:
        if need[m] is None:
            continue
        epochs = sorted({int(c.record["epochs"]) for c in cells[m].values() if c.record.get("epochs") is not None})
        if not epochs or epochs[0] < need[m]:
            short[m] = "/".join(map(str, epochs)) or "unknown"
    if not short:
        return None
    protocol = (", ".join(f"{m} {need[m]}" for m in short) + " epochs" if isinstance(min_epochs, dict)
                else f"{min_epochs} epochs")
    return (f"trained below the source's protocol ({protocol}): " +
            ", ".join(f"{m} {e} epoch{'s' if e != '1' else ''}" for m, e in short.items()))


def check_claims(claims: dict[str, Claim], inputs: list, datasets: list[str], models: list[str],
                 diagnostics=None) -> list[dict]:
    """Every claim on every dataset: the rows of ``reports/claims.csv`` (keys :data:`COLUMNS`, in claim, dataset,
    comparison, pair and metric order).

    Raises:
        ValueError: two compared models were evaluated on different test images.
    """
    from vaebench.report.flags import diagnose
    from vaebench.report.paired import model_record

    diagnostics = diagnostics if diagnostics is not None else diagnose(inputs, datasets, models)
    by_model: dict[tuple[str, str], dict[int, object]] = {}
    for c in inputs:
        by_model.setdefault((c.cell[0], c.cell[1]), {})[int(c.cell[2])] = c
    rows = []
    for cid, claim in claims.items():
        for d in datasets:
            cells = {m: by_model[(d, m)] for m in models if (d, m) in by_model}
            records = {m: model_record(d, m, c) for m, c in cells.items()}
            train_k = {m: int((r.get("objective_params") or {}).get("k", 1)) for m, r in records.items()}
            for comp in claim.comparisons:
                for a, b, reason in _pairs(comp, d, models, records):
                    for metric, expectation in comp.metrics.items():
                        head = {"claim_id": cid, "claim": claim.claim, "dataset": d, "model_a": a, "model_b": b,
                                "metric": metric, "expected": expected_text(expectation), "source": claim.source,
                                "note": claim.note}
                        why = reason
                        if claim.scope is not None and d not in claim.scope and not why:
                            why = f"{OUT_OF_SCOPE}: the source states it for {', '.join(claim.scope)}"
                        if not why:
                            failed = [short_training(claim.min_epochs, (a, b), cells)]
                            failed += [failed_precondition(p, d, (a, b), metric, diagnostics, cells)
                                       for p in claim.requires]
                            failed = [f for f in failed if f]
                            why = "; ".join(failed) or None
                        if why:
                            rows.append(_empty(head, why))
                            continue
                        base = pair_base(d, a, b, None, cells[a], cells[b])
                        row = compare_metric(base, metric, cells[a], cells[b], diagnostics)
                        rows.append({**head, **{k: row[k] for k in ("diff", "ci_low", "ci_high", "level", "n_seeds",
                                                                     "se", "se_seeds", "se_images", "n_images")},
                                     **_published(d, a, b, metric, train_k),
                                     "verdict": verdict(expectation, row),
                                     "reason": row["reason"] or (
                                         f"borderline: moving the difference by one standard error "
                                         f"({row['se']:.3g}) would change the verdict"
                                         if borderline(expectation, row) else row["reason"]),
                                     "lk_not_converged": ";".join(row["lk_not_converged"]) or None})
    return [{k: r.get(k) for k in COLUMNS} for r in rows]


def _empty(head: dict, reason: str) -> dict:
    return {**head, "verdict": NOT_TESTED, "reason": reason}


def metric_label(metric: str) -> str:
    """The metric's label with its unit (:mod:`vaebench.metrics.spec`)."""
    return spec.compared(metric).label


def write_claims_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` (from :func:`check_claims`) to ``path`` atomically as CSV with the :data:`COLUMNS` header
    (floats written with full precision by pandas, so a rerun reproduces the file byte for byte)."""
    import pandas as pd

    from vaebench.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False, lineterminator="\n")
    return path


def read_claims_csv(path: str | os.PathLike):
    """``reports/claims.csv`` as a pandas DataFrame (missing values as None-like NaN).

    Raises:
        FileNotFoundError: naming the file; ValueError: its header is not :data:`COLUMNS`.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no claims file; run the report stage (python -m vaebench report)")
    df = pd.read_csv(path)
    if list(df.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)} are not the expected {COLUMNS}; rerun the report")
    return df
