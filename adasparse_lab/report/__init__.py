"""Study reports: one self-contained Plotly HTML per study, rebuilt from what was stored
(Optuna storage + MLflow), never from objects in memory.

    python -m adasparse_lab.report study=<name>[,<name2>] [storage=<url>] [out=reports]
    from adasparse_lab.report import build_report; build_report(["name"], [storage_url], "reports")

The tables come from adasparse_lab.results (a stored study read back: collect). Modules here:
figures / domain_figures / structure / diagnostics (tables -> Plotly figures), analysis
(orderings for them), tables (derived tables), claims_section (the claims as HTML), sections
+ html with page.html.j2 / parts.html.j2 (the page), build (the entry point).
"""

from adasparse_lab.report.build import build_report

__all__ = ["build_report"]
