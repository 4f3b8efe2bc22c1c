"""The reproduction index: one row per seed experiment (a study file with a ``source``), built from the study files
and the committed reports under reports/<study>/ (never from numbers typed by hand). It is the README's first
section and the reports' landing page, reports/index.html."""
from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from vaebench import paths


@dataclass
class Row:
    """One seed experiment: its study, source, status, our numbers next to the published ones, verdicts, commands."""

    study: str
    file: str
    paper: str
    experiment: str
    status: str
    cost: str
    numbers: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # dataset, model, metric, published, ours
    verdicts: list[tuple[str, str, str, str]] = field(default_factory=list)      # claim, comparison, verdict, reason
    deviations: list[str] = field(default_factory=list)

    @property
    def commands(self) -> tuple[str, str]:
        """(Snakemake, DVC) command that runs the study."""
        if self.file == paths.DEFAULT_STUDY:
            return "make run", "dvc repro"
        return (f"snakemake --cores all --configfile {self.file}",
                f"dvc repro {paths.pipeline_file(Path(self.file).stem)}")


def study_files(root: str | Path = ".") -> list[str]:
    """The project's study files, repository-relative: params.yaml (the default study), then studies/*.yaml."""
    root = Path(root)
    found = sorted(Path(f).relative_to(root).as_posix() for f in glob.glob(str(root / paths.STUDIES_DIR / "*.yaml")))
    return [paths.DEFAULT_STUDY, *found]


def _ours(models: dict, dataset: str, model: str, metric: str) -> str:
    from vaebench.metrics import spec
    from vaebench.report.format import format_ci

    stat = models.get(dataset, {}).get(model, {}).get(metric)
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "n/a"
    fmt = next((m.fmt for m in spec.metrics() if m.key == metric), ".2f")
    return format_ci(stat, fmt)


def index_rows(root: str | Path = ".") -> list[Row]:
    """A :class:`Row` per study file of ``root`` that has a ``source``, in :func:`study_files` order.

    Raises:
        vaebench.config.ConfigError: a study file is invalid (the message names it).
    """
    from vaebench.config import load_study
    from vaebench.report.claims import read_claims_csv, split_absent

    root = Path(root)
    rows = []
    for f in study_files(root):
        study = load_study(root / f, catalogue=root / paths.CATALOGUE)
        src = study.config.source
        if src is None:
            continue
        metrics_file = root / paths.REPORT_METRICS.format(study=study.name)
        claims_file = root / paths.REPORT_CLAIMS.format(study=study.name)
        run = metrics_file.is_file()
        status = ("run here: report committed" if run else
                  "fits a CPU: not run yet" if src.status == "fits a CPU" else src.status)
        row = Row(study.name, f, src.paper, src.experiment, status, src.cost, deviations=list(src.deviations))
        models = json.loads(metrics_file.read_text(encoding="utf-8"))["models"] if run else {}
        for p in src.published:
            ours = _ours(models, p.dataset, p.model, p.metric) if run else "not run"
            row.numbers.append((p.dataset, p.model, p.metric, f"{p.value:g}", ours))
        if claims_file.is_file():
            df = read_claims_csv(claims_file)
            present, _ = split_absent(df.astype(object).where(df.notna(), None).to_dict("records"))
            row.verdicts += [(r["claim_id"], f"{r['model_a']} vs {r['model_b']}, {r['metric']} ({r['dataset']})",
                              r["verdict"], r["reason"] or "") for r in present]
        rows.append(row)
    return rows


def _short(paper: str) -> str:
    """'Burda, Grosse & Salakhutdinov 2016, Importance ...' -> 'Burda, Grosse & Salakhutdinov 2016'."""
    import re

    m = re.match(r"^(.*?\d{4})", paper)
    return m[1] if m else paper


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def index_markdown(rows: list[Row]) -> str:
    """The README's index: a table of every seed experiment, then ours vs published and the verdicts of those run."""
    lines = ["| experiment | study | status | ours vs published | verdicts | reproduce |", "|---|---|---|---|---|---|"]
    for r in rows:
        numbers = "; ".join(f"{m} {metric}: {ours} vs {pub}" for d, m, metric, pub, ours in r.numbers
                            if ours != "not run") or "-"
        verdicts = "; ".join(dict.fromkeys(f"{c}: {v}" for c, _, v, _ in r.verdicts)) or "-"   # each once
        lines.append(f"| {_md(_short(r.paper))}, {_md(r.experiment)} | `{r.file}` | {_md(r.status)} | "
                     f"{_md(numbers)} | {_md(verdicts)} | `{r.commands[0]}` |")
    lines.append("")
    lines.append("Ours: mean ± half-width of the 95% interval over seeds, from `reports/<study>/metrics.json`; "
                 "published: the study file's `source.published`, as printed (signs as our metric: a published "
                 "loss -ELBO is shown as the ELBO). What each study costs and needs: "
                 "[docs/studies.md](docs/studies.md#what-each-study-costs).")
    return "\n".join(lines)


def costs_markdown(rows: list[Row]) -> str:
    """One bullet per seed experiment: its status and its cost, measured where it ran, or what it needs."""
    return "\n".join(f"- `{r.study}` ({r.status}): {_md(r.cost)}" for r in rows)


def index_html(rows: list[Row]) -> str:
    """reports/index.html: the same index with links to each study's report, deviations and every verdict's reason."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("vaebench.report", "templates"), autoescape=select_autoescape())
    return env.get_template("landing.html.j2").render(rows=rows)
