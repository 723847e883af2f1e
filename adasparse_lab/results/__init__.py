"""A stored study read back into polars tables: Optuna trials, MLflow runs and artifacts,
re-evaluation and reference readers, the paper's claims measured from them; no figures, no HTML.

Modules: storage (find and open a study's Optuna storage; its trials as a table), runs (its
MLflow runs and artifacts), collect (both joined: ReportData, read by the report and by the
end-of-study summary), fronts (front, spread pick, hypervolume reference point), keep (kept
neurons and their overlap), claims (the paper's claims parsed and measured).
"""
