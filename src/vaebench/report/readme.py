"""The generated sections of the README and the reference pages (:data:`GENERATED_FILES`: the reproduction index,
the default study's verdicts and results, the components, every setting, the random streams), rewritten between
their markers by `python -m vaebench readme`."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from vaebench import paths
from vaebench.metrics import spec
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
    """'mean ± half-width of the 95% interval over seeds' (:func:`vaebench.report.format.format_ci`), '' without
    a value."""
    from vaebench.report.format import format_ci

    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return ""
    return format_ci(stat, spec)


def _models(metrics: dict, path: str | Path = "metrics.json") -> dict:
    """The ``models`` part of a reports/metrics.json.

    Raises:
        ValueError: the file has the structure of an older report stage (no ``models``).
    """
    if not isinstance(metrics.get("models"), dict):
        raise ValueError(f"{path} has no 'models' section (written by an older report stage): rerun "
                         "`python -m vaebench report`")
    return metrics["models"]


def _data_text(record: dict) -> str:
    """The data space of a model's numbers, and 'not a density' when its likelihood is not one."""
    space = record.get("data_space") or "?"
    return space + (", not a density" if record.get("valid_density") is False else "")


def results_table(study, metrics: dict) -> str:
    """Markdown table of the study's results per dataset and model from a reports/metrics.json: the data
    space of its likelihood numbers, the seeds, and mean ± half-width of the 95% interval over seeds of the test
    ELBO, KL, -L_k (with its k), bits/dim, classifier FID and training time."""
    models_stats = _models(metrics)
    header = ["dataset", "model", "posterior", "likelihood", "objective", "data", "seeds",
              "test ELBO", "KL", "test NLL = -L_k (k)", "bits/dim", "FID (classifier)",
              "train s"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for dataset in study.dataset_names:
        for model in study.model_names:
            m = models_stats.get(dataset, {}).get(model, {})
            cell = study.cell(dataset, model, study.seeds[0])
            cfg = cell.model_config
            record = _likelihood_metadata(cell)
            nll = _fmt(m.get(_key("nll")), ".1f")
            seeds = max((s.get("n_seeds", 0) for s in m.values()), default=0)
            lines.append(" | ".join([
                f"| {dataset}", model, cfg.posterior.name, cfg.likelihood.name, cfg.objective.name,
                _data_text(record), str(seeds),
                _fmt(m.get(_key("elbo")), ".1f"), _fmt(m.get(_key("kl")), ".1f"),
                f"{nll} ({cell.evaluate.iwae_k})" if nll else "", _fmt(m.get("bits_per_dim"), ".3f"),
                _fmt(m.get(_key("fid")), ".1f"), _fmt(m.get("train_seconds"), ".0f")]) + " |")
    return "\n".join(lines)


def _key(name: str) -> str:
    return spec.compared(name).key


def _likelihood_metadata(cell) -> dict:
    """The likelihood metadata of a cell's model (data_space, valid_density, ...), from the registry."""
    return AXES["likelihood"].get(cell.model_config.likelihood.name).metadata()


def _diff_text(row: dict | None) -> str:
    """'A - B ± SE (verdict)' of a comparison row; the reason in a few words when it was not compared."""
    if row is None:
        return ""
    if not row["compared"]:
        reason = str(row.get("reason") or "")
        return "not compared: " + ("not a density" if "normalised density" in reason else
                                   "different data" if "data spaces" in reason else reason)
    se = row.get("se")
    text = f"{row['diff']:.2f}" + (f" ± {se:.2f}" if se is not None else "")
    verdict = f"{row['better']} better" if row.get("better") else row["verdict"]
    flag = " (L_k not converged)" if row.get("lk_not_converged") else ""
    return f"{text} ({verdict}){flag}"


def comparisons_table(metrics: dict) -> str:
    """Markdown table of the paired comparisons of a reports/metrics.json, one line per pair: A, B, the component that
    differs, A - B ± SE (over seeds and test images) and the verdict for the test NLL and the FID."""
    pairs: dict[tuple, dict] = {}
    for row in metrics.get("comparisons", []):
        key = (row["dataset"], row["model_a"], row["model_b"], row["axis"])
        pairs.setdefault(key, {})[row["metric"]] = row
    if not pairs:
        return ""
    lines = ["| dataset | A | B | differs in | NLL: A - B | FID: A - B |", "|---" * 6 + "|"]
    for (dataset, a, b, axis), rows in pairs.items():
        lines.append(f"| {dataset} | {a} | {b} | {axis} | {_diff_text(rows.get('nll'))} | "
                     f"{_diff_text(rows.get('fid'))} |")
    return "\n".join(lines)


def study_text(study) -> str:
    """The study's protocol as Markdown bullets, from its validated settings: the grid, training (per dataset) and
    evaluation sizes, so that no count in the README is written by hand."""
    from vaebench.dag import STAGES

    c = study.config
    n_cells = len(study.cells())
    sizes = {"dataset": len(study.dataset_names), "model": len(study.model_names), "seed": len(study.seeds)}
    jobs = sum(math.prod(sizes[a] for a in s.over) for s in STAGES.values())
    lines = [f"- grid: {len(study.model_names)} models x {len(study.dataset_names)} datasets "
             f"({', '.join(study.dataset_names)}) x {len(study.seeds)} seeds = {n_cells} cells ({jobs} jobs)"]
    for d in study.dataset_names:
        data = study.config.datasets[d].model_dump(exclude_none=True)
        shown = ", ".join(f"{k} {v}" for k, v in data.items() if k.startswith(("max_", "n_")))
        cell = study.cell(d, study.model_names[0], study.seeds[0])
        epochs = f"{cell.train.epochs} epoch{'s' if cell.train.epochs != 1 else ''}"
        lines.append(f"- {d}: {epochs}, batch {cell.train.batch_size}, Adam lr {cell.train.lr:g}"
                     + (f" ({shown})" if shown else ""))
    e = c.evaluate
    lines.append(f"- evaluation: {e.n_images if e.n_images else 'all'} test images per estimate (all of a smaller "
                 f"test split), L_k with k = {e.iwae_k}, latent analysis on {e.latent_n}, FID on {e.fid_n} samples "
                 f"x {e.fid_seeds} sample seeds; the FID classifier trains {c.classifier.epochs} epochs")
    return "\n".join(lines)


def verdicts_table(claims_path: str | Path) -> str:
    """Markdown of the verdict table (:func:`vaebench.report.tables.comparisons.verdict_table`) of a reports/claims.csv,
    preceded by the count of each verdict."""
    from vaebench.report import claims, render
    from vaebench.report.tables.comparisons import verdict_counts, verdict_table

    df = claims.read_claims_csv(claims_path)
    rows, absent = claims.split_absent(df.astype(object).where(df.notna(), None).to_dict("records"))
    table = verdict_table(rows)
    lines = ["| " + " | ".join(render.md_cell(c) for c in table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(render.md_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return (verdict_counts(rows) + " (superiority: reproduced when the 95% interval over seeds and test images "
            "excludes 0 on the claimed side, inconclusive when it covers 0, not reproduced when it excludes 0 on "
            "the other side; non-inferiority and equivalence by their margins; not tested: the reason).\n\n"
            + "\n".join(lines) + (f"\n\n{claims.absent_text(absent)}" if absent else ""))


def sections(study, metrics_path: str | Path | None = None, claims_path: str | Path | None = None,
             rows: list | None = None) -> dict[str, str]:
    """{section name: generated Markdown} for the README: the components, the verdicts on the seed papers'
    claims (from reports/claims.csv), the results table followed by the paired comparisons (both in the
    'results' section), and the table of random streams; ``rows``: the index's rows when the caller has them
    (:func:`vaebench.report.index.index_rows`, which validates every study file).

    Raises:
        ValueError: the metrics or claims file has the structure of an older report stage.
        FileNotFoundError: no claims file.
    """
    metrics_path = metrics_path or paths.REPORT_METRICS.format(study=study.name)
    claims_path = claims_path or paths.REPORT_CLAIMS.format(study=study.name)
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    _models(metrics, metrics_path)
    results = results_table(study, metrics)
    pairs = comparisons_table(metrics)
    if pairs:
        results += ("\n\nPaired comparisons of the models that differ in one component (A - B over the seeds "
                    "both have and the same test images; ± SE over seeds and test images; the verdict names a model only when "
                    "the 95% CI excludes 0; lower NLL and FID are better):\n\n" + pairs)
    from vaebench.seeds import protocol_table

    from vaebench.report.index import costs_markdown, index_markdown, index_rows

    rows = index_rows() if rows is None else rows      # the index's rows, read once by write_all
    return {"index": index_markdown(rows), "costs": costs_markdown(rows), "components": components_table(),
            "verdicts": verdicts_table(claims_path), "results": results, "seeds": protocol_table(),
            "study": study_text(study), "settings": settings_reference()}


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


# The files with generated sections, and the sections each holds (one definition: `python -m vaebench readme` and
# tests/test_generated.py both read it).
GENERATED_FILES: dict[str, tuple[str, ...]] = {
    "README.md": ("index", "study", "verdicts", "results"),
    "docs/studies.md": ("costs", "components", "settings"),
    "docs/development.md": ("seeds",),
}


def _default_text(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True) if field.default is PydanticUndefined else field.default
    return "null" if value is None else f"`{value!r}`" if not isinstance(value, (dict, list)) or value else f"`{value}`"


def _fields_table(cls) -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        text = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{field.alias or name}` | {_default_text(field)} | {text} |")
    return "\n".join(rows)


def settings_reference() -> str:
    """Markdown tables of every key of a study file with its default and meaning, generated from the typed
    configs: the top level, ``train``, ``classifier``, ``evaluate`` and an image folder's ``datasets.<name>``."""
    from vaebench.config.stages import ClassifierConfig, EvaluateConfig
    from vaebench.config.study import study_config_class
    from vaebench.data.image_folder import ImageFolderConfig

    parts = [("The top level of a study file", study_config_class()),
             ("`train` (a model's `train:` overrides the same keys for that model)",
              study_config_class().model_fields["train"].annotation),
             ("`classifier` (the FID feature classifier)", ClassifierConfig),
             ("`evaluate`", EvaluateConfig),
             ("`datasets.<name>` of a folder of your own images (`kind: image_folder`)", ImageFolderConfig)]
    return "\n\n".join(f"{title}:\n\n{_fields_table(cls)}" for title, cls in parts)


def write_all(study, check: bool, write) -> bool:
    """Render every generated section into its file (:data:`GENERATED_FILES`) and write reports/index.html, each
    through ``write(path, text, check, what) -> bool`` (the CLI's write-if-changed); True when all were current
    or written."""
    from vaebench.report.index import index_html, index_rows

    rows = index_rows()
    generated = sections(study, rows=rows)
    ok = []
    for path, names in GENERATED_FILES.items():
        text = Path(path).read_text(encoding="utf-8")
        ok.append(write(path, render(text, {n: generated[n] for n in names}), check, "readme"))
    ok.append(write(paths.INDEX_HTML, index_html(rows), check, "readme"))
    return all(ok)
