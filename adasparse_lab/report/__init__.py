"""Study reports: one self-contained Plotly HTML per study, rebuilt from what was stored
(Optuna storage + MLflow), never from objects in memory.

    python -m adasparse_lab.report study=<name>[,<name2>] [storage=<url>] [out=reports]
    from adasparse_lab.report.build import build; build(["name"], [storage_url], "reports").path

The tables and every number come from adasparse_lab.results (a stored study read back:
collect; derived tables: results.tables). Modules here: figures / domain_figures / structure
/ diagnostics (tables -> Plotly figures), sections (the sections, claims included), html
with page.html.j2 / parts.html.j2 (the page), build (the entry point); markdown (the claims
as the Markdown tables study.claims prints).
"""
