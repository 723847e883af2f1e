"""The report section "The paper's claims against this run", and its text form for
``python -m adasparse_lab.study.claims``: for every study whose stored config declares
``study.claims`` (results/claims.py measures them), the claims table and the arms table."""

from __future__ import annotations

import polars as pl
from omegaconf import OmegaConf

from adasparse_lab.report.claims_markdown import format_claims
from adasparse_lab.report.html import Block, Section, table_html
from adasparse_lab.report.sections import per_study, section
from adasparse_lab.report.style import fmt
from adasparse_lab.results.claims import (
    HELD,
    NOT_HELD,
    ClaimPlan,
    ClaimResult,
    arm_summary,
    arm_trials,
    measure,
    parse_claims,
)
from adasparse_lab.results.collect import ReportData, StudyInfo
from adasparse_lab.results.runs import read_artifact_tables


def plan_of(info: StudyInfo) -> ClaimPlan | None:
    """The study's claims, from the resolved config it stored (None: it declares none)."""
    study = OmegaConf.create(info.attrs.get("config") or "{}").get("study") or {}
    raw = study.get("claims")
    if not raw:
        return None
    raw = OmegaConf.to_container(raw)
    arm = (study.get("space") or {}).get(raw.get("arm", "arm")) or {}
    arms = set(arm.get("overrides") or {}) | set(arm.get("choices") or [])
    return parse_claims(raw, arms)


def study_claims(
    data: ReportData, info: StudyInfo
) -> tuple[list[ClaimResult], pl.DataFrame] | None:
    """The measured claims and the arms table of one study (None: it declares no claims)."""
    plan = plan_of(info)
    if plan is None:
        return None
    in_study = pl.col("study") == info.name
    arms = arm_trials(data.trials.filter(in_study), plan)
    if not arms.height:
        return [ClaimResult(c, note="no completed trial") for c in plan.claims], arms
    structure_arms = {c.arm for c in plan.claims if c.kind == "groups"}
    wanted = arms.filter(pl.col("arm").is_in(structure_arms) & pl.col("run_id").is_not_null())
    found = read_artifact_tables(info.runs, wanted["run_id"].to_list(), "keep_prob.parquet")
    keep = {n: found[r] for n, r in zip(wanted["number"], wanted["run_id"]) if r in found}
    domain_metrics, domains = data.domain_metrics.filter(in_study), data.domains.filter(in_study)
    return measure(plan, arms, domain_metrics, domains, keep), arm_summary(arms)


def claims_text(data: ReportData) -> str:
    """Every study's claims and arms as Markdown tables (what the command prints)."""
    found = [(info.name, study_claims(data, info)) for info in data.studies]
    return "\n\n".join(
        f"{name}: no study.claims in its config"
        if claims is None
        else f"## {name}: the paper's claims against this run\n\n{format_claims(*claims)}"
        for name, claims in found
    )


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
