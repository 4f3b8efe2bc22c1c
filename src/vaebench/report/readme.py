"""The README's generated sections: the table of registered components (from the registry) and the
default study's results (from the committed ``reports/metrics.json`` and the study). Nothing in them is
typed by hand: ``python -m vaebench readme`` rewrites the text between the markers

    <!-- generated:NAME (python -m vaebench readme) -->
    ...
    <!-- end generated:NAME -->

and a test checks that the committed README equals what the command would write.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from vaebench import paths
from vaebench.registry import AXES

MARK = "<!-- generated:{name} (python -m vaebench readme) -->"
END = "<!-- end generated:{name} -->"


def _settings(cls) -> str:
    """'key = default' for every setting of a component config ('-' when it has none)."""
    out = []
    for name, field in cls.Config.model_fields.items():
        if name != "name":
            default = field.default
            out.append(f"{field.alias or name} = {default!r}" if default is not None else f"{field.alias or name}")
    return ", ".join(out) or "-"


def components_table() -> str:
    """Markdown table: axis, name, settings with their defaults, description, module."""
    lines = ["| axis | name | settings (defaults) | what it is | module |", "|---|---|---|---|---|"]
    for axis, reg in AXES.items():
        for cls in reg:
            module = cls.__module__.replace(".", "/") + ".py"
            cells = [axis, f"`{cls.name}`", _settings(cls), cls.description, f"`src/{module}`"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _fmt(stat: dict | None, spec: str) -> str:
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return ""
    text = format(stat["mean"], spec)
    return text + (f" ± {format(stat['std'], spec)}" if stat.get("std") is not None else "")


def results_table(study, metrics: dict) -> str:
    """Markdown table of the study's results per dataset and model: mean (± std over seeds) of the test ELBO,
    KL, -L_k with its k, bits/dim, classifier FID and training time, from an aggregated metrics.json."""
    lines = ["| dataset | model | posterior | likelihood | objective | test ELBO | KL | test NLL = -L_k (k) "
             "| bits/dim | FID (classifier) | train s |", "|---" * 11 + "|"]
    for dataset in study.dataset_names:
        for model in study.model_names:
            m = metrics.get(dataset, {}).get(model, {})
            cell = study.cell(dataset, model, study.seeds[0])
            cfg = cell.model_config
            nll = _fmt(m.get("test_nll_iwae_nats"), ".1f")
            lines.append(" | ".join([
                f"| {dataset}", model, cfg.posterior.name, cfg.likelihood.name, cfg.objective.name,
                _fmt(m.get("test_elbo_nats"), ".1f"), _fmt(m.get("test_kl_nats"), ".1f"),
                f"{nll} ({cell.evaluate.iwae_k})" if nll else "", _fmt(m.get("bits_per_dim"), ".3f"),
                _fmt(m.get("fid_classifier"), ".1f"), _fmt(m.get("train_seconds"), ".0f")]) + " |")
    return "\n".join(lines)


def sections(study, metrics_path: str | Path = paths.REPORT_METRICS) -> dict[str, str]:
    """{section name: generated Markdown} for the README."""
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    return {"components": components_table(), "results": results_table(study, metrics)}


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with the body of every generated section replaced.

    Raises:
        ValueError: a section's markers are missing from ``text``.
    """
    for name, body in generated.items():
        start, end = MARK.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no generated section {name!r}: add the lines\n{start}\n{end}")
        text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)
    return text
