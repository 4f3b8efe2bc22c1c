"""The report as one document of blocks, rendered to HTML (images embedded) and Markdown by Jinja2 templates."""
from __future__ import annotations

import base64
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import vaebench.report.protocol as protocol
from vaebench.report.format import unique
from vaebench.report.tables import comparisons as comparison_tables, diagnostics as flag_text, results
from vaebench.report.figures import DatasetFigures
from vaebench.report.flags import RULES, Diagnostics

TEMPLATE_HTML = "index.html.j2"
TEMPLATE_MD = "index.md.j2"


@dataclass(frozen=True)
class Img:
    """An image of the report: ``path`` (a file on disk), shown with ``alt`` text."""

    path: Path
    alt: str


@dataclass
class Block:
    """One block of the document. ``kind`` is 'heading' (``level``, ``text``), 'paragraph' (``text``),
    'list' (``items``), 'image' (``image``) or 'table' (``columns``, ``rows``: lists of str or :class:`Img`)."""

    kind: str
    text: str = ""
    level: int = 1
    items: list[str] = field(default_factory=list)
    image: Img | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    id: str | None = None
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Document:
    """The report: a ``title`` and its ``blocks`` in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        """Append a heading of ``level`` (1 = the title)."""
        self.blocks.append(Block("heading", text=text, level=level))

    def paragraph(self, text: str) -> None:
        """Append a paragraph of plain text."""
        self.blocks.append(Block("paragraph", text=text))

    def bullets(self, items: list[str]) -> None:
        """Append a bullet list."""
        self.blocks.append(Block("list", items=list(items)))

    def image(self, img: Img) -> None:
        """Append a figure."""
        self.blocks.append(Block("image", image=img))

    def table(self, df: pd.DataFrame, id: str | None = None, row_classes: list[str] | None = None) -> None:
        """Append ``df`` as a table (header = its columns); cells are text ('n/a' for None) or :class:`Img`.
        ``id``: the HTML table's id; ``row_classes``: a CSS class per row (HTML only)."""
        rows = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
        self.blocks.append(Block("table", columns=[str(c) for c in df.columns], rows=rows, id=id,
                                 row_classes=list(row_classes or [])))


def _cell(v: Any) -> Any:
    if isinstance(v, Img):
        return v
    return "n/a" if v is None else str(v)



def build_document(title: str, datasets: list[str], models: list[str], seeds: list, frame: pd.DataFrame,
                   aggregate: dict, figures: dict[str, DatasetFigures], comparisons: list[dict] | None = None,
                   diagnostics: Diagnostics | None = None, verdicts: list[dict] | None = None) -> Document:
    """The report's blocks: an introduction, the verdicts on the claims, then per dataset the pictures, the likelihood
    results per data space, latent analysis, FID, training quantities, paired comparisons, flags and the published
    comparison; at the end the protocol and the model descriptions."""
    comparisons = comparisons or []
    diagnostics = diagnostics or Diagnostics()
    doc = Document(title)
    doc.heading(1, title)
    doc.paragraph(protocol.intro_text(datasets, models, seeds, len(frame)))
    _verdicts(doc, verdicts or [])
    for d in datasets:
        doc.heading(2, f"Dataset: {d}")
        _pictures(doc, d, models, seeds, figures[d])
        _results(doc, d, models, aggregate, frame, diagnostics)
        _paired(doc, d, comparisons)
        _flags(doc, d, diagnostics)
        _comparison(doc, d, models, aggregate, frame)
    _protocol(doc, datasets, models, seeds, frame)
    for d in datasets:
        doc.heading(3, f"Models: {d}")
        doc.table(results.models_table(d, models, frame))
    return doc


def _verdicts(doc: Document, verdicts: list[dict]) -> None:
    from vaebench.report.claims import absent_text, split_absent

    verdicts, absent = split_absent(verdicts)
    if not verdicts:        # a study of the user's own: one line, and the results come first
        claims = len({r["claim_id"] for r in absent})
        doc.paragraph(f"None of the seed papers' {claims} claims (claims.yaml) applies to this study (their models "
                      "or datasets are not in it), so this report has no verdicts; claims.csv lists every claim with "
                      "the reason.")
        return
    doc.heading(2, "Verdicts: the seed papers' claims on this study")
    doc.paragraph("Each claim of claims.yaml checked on every dataset: our paired difference A - B over the seeds "
                  "both models have (and, for likelihoods, the same test images) with its 95% Student-t interval "
                  "over seeds. Reproduced: the interval excludes 0 on the claimed side (or, for 'matches', lies "
                  "within the stated margin); not reproduced: it excludes 0 on the other side (or lies outside "
                  "the margin); inconclusive: it covers 0, a difference inside the noise. Also in claims.csv. "
                  + comparison_tables.verdict_counts(verdicts) + ".")
    if absent:
        doc.paragraph(absent_text(absent))
    classes = [r["verdict"].replace(" ", "-") for r in verdicts]
    doc.table(comparison_tables.verdict_table(verdicts), id="verdicts", row_classes=classes)
    notes = {}
    for r in verdicts:
        notes.setdefault(r["claim"], (r["source"], r.get("note")))
    doc.paragraph("Claims, their sources and protocol notes:")
    doc.bullets([f"{claim} ({source})" + (f": {note}" if note else "") for claim, (source, note) in notes.items()])


PICTURES = (  # (DatasetFigures field, heading), in the order the report shows them
    ("test_curves", "Test loss per epoch, with the published values"),
    ("video_scores", "Video prediction: SSIM and PSNR per predicted frame"),
    ("sweeps", "Metrics against the swept setting"),
    ("rate_distortion", "Rate and distortion"),
    ("fid_nll", "Sample quality against likelihood"),
    ("samples", "Samples of every model"),
    ("recon", "Reconstructions of every model"),
    ("training", "Training curves, one row per model"),
    ("latent", "Latent use per model (chart)"),
)


OPTIONAL_PICTURES = ("test_curves", "sweeps", "video_scores")   # shown only where a study has them
IMAGE_ONLY_PICTURES = ("fid_nll", "latent")   # not drawn for sequence models (no FID, no single q(z|x))


def _pictures(doc: Document, dataset: str, models: list[str], seeds: list, fig: DatasetFigures) -> None:
    for name, heading in PICTURES:
        path = getattr(fig, name, None)
        if path is None and (name in OPTIONAL_PICTURES or fig.video_scores is not None and name in IMAGE_ONLY_PICTURES):
            continue
        doc.heading(3, heading)
        if path is None:
            doc.paragraph(fig.captions.get(name) or "Nothing to plot for this dataset.")
            continue
        doc.image(Img(path, f"{dataset}: {heading.lower()}"))
        if fig.captions.get(name):
            doc.paragraph(fig.captions[name])
    if fig.animation is not None:
        doc.heading(3, "Continuations, animated")
        doc.paragraph(fig.captions["animation"])
        doc.image(Img(fig.animation, f"{dataset}: continuations of every model"))
    doc.heading(3, "Validation curves, all models on one axis")
    doc.image(Img(fig.curves, f"{dataset} validation curves"))
    doc.paragraph(f"Validation -ELBO and the training objective per epoch, mean over seeds. Every cell's sample "
                  f"and reconstruction grid (all seeds) is in figures/{dataset}_<model>_seed<seed>_*.png.")


def _results(doc: Document, dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame,
             diagnostics: Diagnostics) -> None:
    sub = frame[frame["dataset"] == dataset]
    for space, group in results.space_groups(dataset, models, frame).items():
        doc.heading(3, f"Results (test set): {results.space_title(space)}")
        rows = sub[sub["model"].isin(group)]
        text = (f"Likelihood of {unique(rows, 'likelihood_of')}; data {unique(rows, 'data_treatment')}. "
                + results.bits_convention(space))
        doc.paragraph(text.strip())
        doc.table(results.likelihood_table(dataset, space, group, aggregate, frame, diagnostics))
        if results.has_discretised(dataset, group, aggregate):
            doc.paragraph(results.DISCRETISED_NOTE)
        invalid = results.invalid_density_models(dataset, group, frame)
        if invalid:
            doc.paragraph(results.density_note(invalid, sub))
    if results.is_video(sub):
        doc.paragraph(results.VIDEO_UNITS_NOTE)
        doc.heading(3, "Video prediction (best of N continuations)")
        doc.paragraph(results.VIDEO_TABLE_NOTE)
        doc.table(results.video_table(dataset, models, aggregate, frame))
        doc.paragraph(results.VIDEO_FID_LATENT_NOTE)
        _training(doc, dataset, models, aggregate)
        return
    doc.heading(3, "Latent analysis")
    doc.table(results.latent_table(dataset, models, aggregate, frame))
    doc.heading(3, "FID")
    doc.paragraph("FID of decoder means, mean ± 95% CI over training seeds; each training seed's value is "
                  "the mean over its sample seeds, whose spread is the next column. The floor is what real "
                  "held-out images score at this N: no model can be expected below it.")
    doc.table(results.fid_table(dataset, models, aggregate, frame))
    _training(doc, dataset, models, aggregate)


def _training(doc: Document, dataset: str, models: list[str], aggregate: dict) -> None:
    doc.heading(3, "Training: effective beta, decoder sigma, GECO")
    doc.paragraph("Effective beta is the KL weight in the common 'SSE + beta KL' convention: 2 sigma^2 beta "
                  "for a Gaussian decoder with one shared sigma (its NLL is SSE / (2 sigma^2) + const), 1/lambda "
                  "for GECO (KL + lambda SSE = lambda (SSE + KL / lambda)); none for GECO+IWAE, whose loss weighs "
                  "no KL term. Values at the end of training.")
    doc.table(results.training_table(dataset, models, aggregate))


def _paired(doc: Document, dataset: str, comparisons: list[dict]) -> None:
    doc.heading(3, "Paired comparisons (models that differ in one component)")
    table = comparison_tables.paired_table(dataset, comparisons)
    if table.empty and not any(r["dataset"] == dataset for r in comparisons):
        doc.paragraph("No two models of this dataset differ in exactly one component.")
        return
    doc.paragraph("A - B over the seeds both models have and, for NLL and ELBO, over the same test images; SE "
                  "combines both error sources: SE over seeds (training randomness) and SE over images (which "
                  "test images were drawn; every seed sees the same ones). The verdict names the better model when the 95% CI excludes 0, else 'inconclusive': "
                  "a difference inside the noise is not a ranking.")
    if not table.empty:
        doc.table(table)
    skipped = comparison_tables.not_compared_table(dataset, comparisons)
    if not skipped.empty:
        doc.paragraph("Not compared, with the reason (NLL and ELBO need one data space and two normalised "
                      "densities):")
        doc.table(skipped)


def _flags(doc: Document, dataset: str, diagnostics: Diagnostics) -> None:
    doc.heading(3, "Flags")
    doc.paragraph(f"L_k convergence, rule: {RULES['lk_not_converged']}")
    doc.bullets(flag_text.lk_flag_items(dataset, diagnostics))
    geco = flag_text.geco_table(dataset, diagnostics)
    if not geco.empty:
        doc.paragraph(f"GECO, rule: {RULES['geco_not_settled']}")
        doc.table(geco)
    sigma = flag_text.sigma_flag_items(dataset, diagnostics)
    if sigma:
        doc.paragraph(f"Learned sigma, rule: {RULES['learned_sigma_not_converged']}")
        doc.bullets(sigma)
    collapsed = flag_text.collapse_flag_items(dataset, diagnostics)
    if collapsed:
        doc.paragraph(f"Collapsed posterior, rule: {RULES['collapsed_posterior']}")
        doc.bullets(collapsed)
    doc.bullets(flag_text.other_flag_items(dataset, diagnostics))


def _comparison(doc: Document, dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> None:
    doc.heading(3, "Comparison with published numbers")
    table = comparison_tables.comparison_table(dataset, models, aggregate, frame)
    if table.empty:
        doc.paragraph("No published number in vaebench.report.published concerns a model of this study on "
                      "this dataset.")
        return
    doc.paragraph("Published values as printed ('<' = a negative ELBO, an upper bound on -log p). The protocols "
                  "differ as stated in the last column: where they differ materially, check the ranking of "
                  "models, not the absolute values.")
    table, notes, sources = comparison_tables.comparison_notes(table)
    doc.table(table)
    doc.paragraph("Protocol differences:")
    doc.bullets([f"note {i}: {n}" for i, n in enumerate(notes, 1)])
    doc.paragraph("Sources:")
    doc.bullets(sources)


def _protocol(doc: Document, datasets: list[str], models: list[str], seeds: list, frame: pd.DataFrame) -> None:
    doc.heading(2, "Protocol")
    doc.bullets(protocol.protocol_items(frame, datasets, models, seeds))
    differences = protocol.setting_differences(frame, models)
    if differences:
        doc.paragraph("Per-model settings that differ from the other models' (from the cells' configuration):")
        doc.bullets(differences)
    doc.heading(3, "Evaluation settings per dataset and model (from the metrics files)")
    doc.table(results.evaluation_settings_table(frame, datasets, models))



def data_uri(path: str | os.PathLike) -> str:
    """The file at ``path`` as a ``data:<mime>;base64,...`` URI (PNG unless the suffix says otherwise)."""
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def md_cell(v: Any) -> str:
    """Text for one Markdown table cell: pipes escaped, line breaks flattened."""
    return ("n/a" if v is None else str(v)).replace("|", "\\|").replace("\n", " ")


def _environment(base: Path | None = None):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vaebench.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False,
                                            default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = data_uri
    env.filters["md_cell"] = md_cell
    env.filters["relative"] = lambda p: Path(os.path.relpath(Path(p), base)).as_posix() if base else str(p)
    env.tests["image"] = lambda v: isinstance(v, Img)
    return env


def render_html(doc: Document) -> str:
    """Self-contained HTML of ``doc``: every image embedded as a base64 data URI, text autoescaped."""
    return _environment().get_template(TEMPLATE_HTML).render(title=doc.title, blocks=doc.blocks)


def render_markdown(doc: Document, base: str | os.PathLike) -> str:
    """Markdown of ``doc``; images are linked by their path relative to ``base`` (the report folder)."""
    return _environment(Path(base)).get_template(TEMPLATE_MD).render(title=doc.title, blocks=doc.blocks)
