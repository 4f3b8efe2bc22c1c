"""Stage ``report``: gather every cell of the study into ``reports/`` (tables, figures, HTML, Markdown)."""
from __future__ import annotations

from vaebench.config import Study


def run(study: Study) -> dict:
    """Write the report files of ``study`` (see :mod:`vaebench.report`); returns what was written."""
    from vaebench.report import build_report

    return build_report(study)
