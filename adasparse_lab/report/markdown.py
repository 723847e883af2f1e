"""The paper's claims against stored studies as Markdown tables, the text the README quotes:
printed by ``python -m adasparse_lab.study.claims`` and at the end of a study. The report's
section "The paper's claims against this run" shows the same numbers as HTML (sections.py);
results/claims.py measures them."""

from __future__ import annotations

import math

import polars as pl

from adasparse_lab.results.claims import ClaimResult, study_claims
from adasparse_lab.results.collect import ReportData


def effect_text(r: ClaimResult) -> str:
    if not r.per_seed:
        return "-"
    sd = "" if math.isnan(r.sd) else f" ± {r.sd:.4f}"
    return f"{r.mean:+.4f}{sd} (n={len(r.per_seed)})"


def format_claims(results: list[ClaimResult], summary: pl.DataFrame) -> str:
    """The claims and the arms as Markdown tables (the README quotes them)."""
    lines = [
        "| the paper reports | measured here | effect, mean ± sd over seeds | verdict |",
        "|---|---|---|---|",
    ]
    for r in results:
        what = r.spec.text + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.spec.source} | {what} | {effect_text(r)} | {r.verdict} |")
    lines += [
        "",
        "| arm | method | seeds | test AUC (mean ± sd) | FLOPs ratio | sparsity |",
        "|---|---|---|---|---|---|",
    ]
    for a in summary.iter_rows(named=True):
        sd = "" if a["test_auc_sd"] is None else f" ± {a['test_auc_sd']:.4f}"
        flops = "-" if a["flops_ratio"] is None else f"{a['flops_ratio']:.3f}"
        sparsity = "-" if a["sparsity"] is None else f"{a['sparsity']:.3f}"
        lines.append(
            f"| {a['arm']} | {a['method']} | {a['seeds']} | {a['test_auc']:.4f}{sd} | {flops} | {sparsity} |"
        )
    return "\n".join(lines)


def claims_text(data: ReportData) -> str:
    """Every study's claims and arms as Markdown tables (what the command prints)."""
    found = [(info.name, study_claims(data, info)) for info in data.studies]
    return "\n\n".join(
        f"{name}: no study.claims in its config"
        if claims is None
        else f"## {name}: the paper's claims against this run\n\n{format_claims(*claims)}"
        for name, claims in found
    )
