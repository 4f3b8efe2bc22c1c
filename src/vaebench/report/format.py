"""Text formatting of the report's values: numbers, intervals, distinct values of a frame's column."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vaebench.report.collect import LEVEL, is_number

NOT_A_DENSITY = "not a normalised density"
CI_TEXT = f"mean ± {LEVEL:.0%} CI over seeds"


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_false(v: Any) -> bool:
    """A boolean field that is set and false (a missing value is not false)."""
    return not missing(v) and not bool(v)


def plain(v: Any) -> str:
    """A value as short text: integral floats without '.0', everything else via ``str``."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def unique(df: pd.DataFrame, col: str, spec: str | None = None) -> str:
    """The distinct non-null values of ``col`` joined with ' / ' in order of appearance ('n/a' when none);
    numbers are formatted with ``spec`` when given."""
    if col not in df.columns:
        return "n/a"
    values: list[str] = []
    for v in df[col].tolist():
        if missing(v):
            continue
        s = format(v, spec) if spec and is_number(v) else plain(v)
        if s not in values:
            values.append(s)
    return " / ".join(values) if values else "n/a"


def num(v: Any, spec: str) -> str:
    """``v`` formatted with ``spec``; 'n/a' for None and non-finite values; a nonzero value that ``spec`` would
    round to zero (a sub-second time under '.0f') keeps two significant digits instead."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    text = format(v, spec)
    if v and isinstance(v, (int, float)) and text.lstrip("-+").strip("0.") == "":
        return format(v, ".2g")
    return text


def format_ci(stat: dict | None, spec: str, sign: float = 1.0) -> str:
    """'mean ± h' with h the half-width of the 95% Student-t interval over seeds (the interval is symmetric: mean ± t
    * se); just 'mean' with one seed (no interval)."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = num(sign * stat["mean"], spec)
    if stat.get("ci_low") is not None and stat.get("ci_high") is not None:
        text += " ± " + num((stat["ci_high"] - stat["ci_low"]) / 2, spec)
    return text


def rows_of(frame: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    if dataset is not None:
        mask &= frame["dataset"] == dataset
    if model is not None:
        mask &= frame["model"] == model
    return frame[mask]


def params_text(frame: pd.DataFrame, prefix: str) -> str:
    """'key = value, ...' of the flattened ``<prefix>.*`` columns (e.g. 'objective_params'), '' when none."""
    cols = [c for c in frame.columns if c.startswith(prefix + ".")]
    parts = []
    for c in cols:
        value = unique(frame, c)
        if value != "n/a":
            parts.append(f"{c[len(prefix) + 1:]} = {value}")
    return ", ".join(parts)


def drop_empty(table: pd.DataFrame, keep: tuple[str, ...] = ("model", "seeds")) -> pd.DataFrame:
    """``table`` without the columns that hold no value ('n/a' everywhere), ``keep`` always kept."""
    if table.empty:
        return table
    return table[[c for c in table.columns if c in keep or (table[c] != "n/a").any()]]



def fid_unavailable_text(sub: pd.DataFrame) -> str | None:
    """'unavailable: <reason>' when the cells of ``sub`` have no classifier-feature FID (the evaluate stage's
    ``fid_classifier_unavailable``, e.g. an unlabelled dataset has no classifier), else None."""
    reason = unique(sub, "fid_classifier_unavailable")
    return None if reason == "n/a" else f"unavailable: {reason}"



def accuracy_text(v: Any) -> str:
    return format(float(v), ".4f") if is_number(v) and math.isfinite(float(v)) else "n/a"

