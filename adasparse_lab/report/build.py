"""Build a study report: collect what was stored, make the sections, write one HTML file (and,
if asked, a static PNG/SVG of every figure). The sweep calls ``build`` at its end."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from adasparse_lab.report.html import Section, render_page, section_figures
from adasparse_lab.report.sections import (
    band_section,
    claims_section,
    context_section,
    domains_section,
    gain_section,
    headline,
    pareto_section,
    search_section,
    structure_section,
    trials_section,
    verdicts_section,
)
from adasparse_lab.results.collect import ReportData, collect

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"
STATIC_FORMATS = ("png", "svg")
VERSIONED = ("adasparse-lab", "plotly", "polars", "optuna", "mlflow", "numpy")


@dataclass
class BuildInfo:
    """What a build produced, for the command's summary line."""

    path: Path
    bytes: int
    seconds: float
    figures: int
    static_files: list[Path] = field(default_factory=list)
    static_note: str = ""
    # The overall and per-domain Pareto fronts, by file name (logged to the study's parent run).
    front_figures: dict[str, go.Figure] = field(default_factory=dict)


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def make_sections(data: ReportData, color_by: str | None = "method") -> list[Section]:
    parts = [
        verdicts_section(data),
        claims_section(data),
        pareto_section(data, color_by),
        domains_section(data),
        structure_section(data),
        gain_section(data),
        band_section(data),
        search_section(data),
        trials_section(data),
        context_section(data, {name: version(name) for name in VERSIONED}),
    ]
    return [p for p in parts if p is not None]


def figure_files(sections: list[Section]) -> list[tuple[str, go.Figure]]:
    """Every figure with a file name: section, running number, and trial for structure views."""
    out = []
    for s in sections:
        for i, (fig, key) in enumerate(section_figures(s), start=1):
            name = f"{s.id}-{i:02d}" + (f"-{key}" if key else "")
            out.append((re.sub(r"[^A-Za-z0-9_.-]+", "_", name), fig))
    return out


FRONT_SECTIONS = {"pareto": "pareto_front.html", "domains": "domain_fronts.html"}


def front_figures(sections: list[Section]) -> dict[str, go.Figure]:
    """The front sections' figures by file name (absent when a section has none yet)."""
    return {
        FRONT_SECTIONS[s.id]: s.blocks[0].figure
        for s in sections
        if s.id in FRONT_SECTIONS and s.blocks and s.blocks[0].figure is not None
    }


def export_static(sections: list[Section], folder: Path, fmt: str) -> tuple[list[Path], str]:
    """A static image of every figure (kaleido + Chromium); a clear note instead when the
    exporter is missing or fails, never a failed report."""
    if fmt not in STATIC_FORMATS:
        raise ValueError(f"static={fmt!r}: choose one of {list(STATIC_FORMATS)}")
    if importlib.util.find_spec("kaleido") is None:
        return [], (
            "static export skipped: kaleido is not installed (pip install kaleido; it also needs "
            "Chromium, e.g. Debian's `chromium` package)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    named = figure_files(sections)
    paths, figs = [folder / f"{name}.{fmt}" for name, _ in named], [fig for _, fig in named]
    try:  # one browser session for all figures (write_image would start one per figure)
        pio.write_images(
            figs,
            paths,
            format=fmt,
            width=[f.layout.width or 1100 for f in figs],
            height=[f.layout.height or 500 for f in figs],
        )
    except Exception as err:  # kaleido without a browser, or a broken one: say so, go on
        return [p for p in paths if p.is_file()], (
            f"static export failed ({type(err).__name__}: {err}); kaleido needs Chromium, "
            "e.g. Debian's `chromium` package"
        )
    return paths, f"{len(paths)} {fmt.upper()} file(s) in {folder}"


def build(
    study_names: Sequence[str],
    storage_urls: Sequence | None = None,
    out_dir: Path | str = "reports",
    *,
    studies_dir: Path | str = "studies",
    color_by: str | None = "method",
    static: str | None = None,
    max_structure_trials: int = 12,
    data: ReportData | None = None,
) -> BuildInfo:
    """Render the report of one or more stored studies as ``<out_dir>/<name>/report.html``
    (``<out_dir>/a+b/report.html`` for several studies); returns its path and the numbers the
    command prints (size, time, figures).

    storage_urls: one per study (an RDB URL, a journal file path or an Optuna storage object),
    or None for the file in ``studies/<name>/`` (journal.log, else optuna.db: studies_layout).
    color_by: a trials column or ``param:<name>``; static: 'png' or 'svg' as well. ``data``:
    the studies already read back (``results.collect``), so a caller that read them once for
    its own summary does not read them again."""
    t0 = time.perf_counter()
    names = list(study_names)
    if not names:
        raise ValueError("no study named")
    if data is None:
        storages = list(storage_urls) if storage_urls else None
        data = collect(names, storages, Path(studies_dir), max_structure_trials)
    sections = make_sections(data, color_by)
    title = f"Study report: {' + '.join(names)}"
    subtitle = [
        f"{len(data.trials)} trials · built {time.strftime('%Y-%m-%d %H:%M:%S')} from stored results "
        f"(Optuna + MLflow)"
    ]
    page, n_figures = render_page(title, subtitle, headline(data), sections)
    path = Path(out_dir) / "+".join(names) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    info = BuildInfo(path, path.stat().st_size, 0.0, n_figures)
    info.front_figures = front_figures(sections)
    if static:
        figures = path.parent / "figures"
        info.static_files, info.static_note = export_static(sections, figures, static)
        (log.info if info.static_files else log.warning)("%s", info.static_note)
    info.seconds = time.perf_counter() - t0
    return info
