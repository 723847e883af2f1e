"""The report section "The paper's claims against this run": for every study whose stored
config declares ``study.claims`` (results/claims.py measures them), the claims table and the
arms table. Their Markdown form is study/claims.py's."""

from __future__ import annotations

from adasparse_lab.report.html import Block, Section, table_html
from adasparse_lab.report.sections import per_study, section
from adasparse_lab.report.style import fmt
from adasparse_lab.results.claims import HELD, NOT_HELD, ClaimResult, study_claims
from adasparse_lab.results.collect import ReportData

CLAIM_COLUMNS = [
    ("source", "the paper reports", "text"),
    ("text", "measured here", "text"),
    ("mean", "effect (mean)", "num"),
    ("sd", "sd over seeds", "num"),
    ("n", "seeds", "num"),
    ("verdict", "verdict", "text"),
]
ARM_COLUMNS = [
    ("arm", "arm", "text"),
    ("method", "method", "text"),
    ("seeds", "seeds", "num"),
    ("test_auc", "test AUC (mean ± sd)", "num"),
    ("flops_ratio", "FLOPs ratio", "num"),
    ("sparsity", "sparsity", "num"),
]


def _claim_cells(r: ClaimResult) -> dict:
    return {
        "source": r.spec.source,
        "text": (r.spec.text + (f" ({r.note})" if r.note else ""), r.spec.text),
        "mean": (f"{r.mean:+.4f}" if r.per_seed else "-", r.mean),
        "sd": (fmt(r.sd), r.sd),
        "n": len(r.per_seed),
        "verdict": r.verdict,
    }


def _arm_cells(a: dict) -> dict:
    return a | {
        "method": (str(a["method"]), a["method"]),
        "test_auc": (f"{fmt(a['test_auc'])} ± {fmt(a['test_auc_sd'])}", a["test_auc"]),
        "flops_ratio": (fmt(a["flops_ratio"], ".3f"), a["flops_ratio"]),
        "sparsity": (fmt(a["sparsity"], ".3f"), a["sparsity"]),
    }


def claims_section(data: ReportData) -> Section | None:
    blocks = []
    for info, prefix in per_study(data):
        if (found := study_claims(data, info)) is None:
            continue
        results, summary = found
        classes = [{HELD: "front", NOT_HELD: "failed"}.get(r.verdict, "") for r in results]
        claims = table_html(CLAIM_COLUMNS, [_claim_cells(r) for r in results], classes)
        blocks.append(Block(title=f"{prefix}claims", html=claims))
        if summary.height:
            arms = table_html(ARM_COLUMNS, [_arm_cells(a) for a in summary.iter_rows(named=True)])
            blocks.append(Block(title=f"{prefix}arms", html=arms))
    return section("claims", blocks) if blocks else None
