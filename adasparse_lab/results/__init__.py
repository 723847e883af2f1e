"""A stored study read back into polars tables: Optuna trials, MLflow runs and artifacts,
re-evaluation and reference readers, the paper's claims measured from them; no figures, no HTML.

Modules: runs (its MLflow runs and artifacts), collect (Optuna trials and runs joined:
ReportData, read by the report and by the end of a study), front (the one definition of a
study's Pareto front, the spread pick of its points, the hypervolume), fronts (the front in
the tables: ``on_front``, the report's staircase, the hypervolume reference point),
pareto_table (the table a study ends with), tables (the report's derived tables), keep (kept
neurons and their overlap), claims (the paper's claims parsed and measured). The stored
study itself is opened by store.reader.
"""
