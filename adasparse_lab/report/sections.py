"""The report's sections, in reading order, from the collected tables: each section is a title,
one line on how to read it, and its figures or tables. Sections that do not apply (no
reference run, a fixed band, no keep probabilities) are left out or replaced by a note."""

from __future__ import annotations

import datetime as dt
import html
import platform
from collections.abc import Iterable, Iterator
from functools import partial

import polars as pl

from adasparse_lab.report.diagnostics import diagnostics
from adasparse_lab.report.domain_figures import domain_fronts_figure, gain_figure
from adasparse_lab.report.figures import band_figure, band_varies, completed, pareto_figure
from adasparse_lab.report.html import Block, Section, StructureView, parts, table_html
from adasparse_lab.report.structure import (
    keep_map_figure,
    overlap_figure,
    sparsity_heatmap,
    structure_order,
)
from adasparse_lab.report.style import fmt
from adasparse_lab.report.tables import domain_gains, domain_points, trial_label
from adasparse_lab.report.toggle import cost_toggle
from adasparse_lab.results.collect import ReportData, StudyInfo, reference_domains

NO_POINTS = "no completed trial with both a validation AUC and a FLOPs ratio yet"
NO_DOMAIN_POINTS = "no per-domain AUC and FLOPs stored in MLflow for completed trials yet"
NO_KEEP = "no keep probabilities stored for front trials"
TEXT = {  # section id -> (title, how to read it), in page order
    "claims": (
        "The paper's claims against this run",
        "Each claim the paper makes, measured on this study's trials (test split): the effect is "
        "signed so that above zero the claim held, per seed of a paired comparison, shown as mean "
        "and sd over seeds. Verdict: held when mean − sd > 0, did not hold when mean + sd < 0, "
        "else inconclusive. Effects are in AUC points (structure: in Jaccard index). Below: every "
        "arm's test AUC, FLOPs ratio and sparsity over its seeds.",
    ),
    "pareto": (
        "Pareto front: AUC against FLOPs",
        "Each point is a finished trial, coloured by method (up and left is better); the line "
        "joins the trials that no other trial beats on both validation AUC and cost; the star is "
        "the dense reference; open diamonds are front trials re-run on test over several seeds "
        "(bars: ±1 sd). Where trials measured their serving time, the buttons switch the cost "
        "axis between analytic FLOPs and measured latency (both relative to the dense model). "
        "Hover a point for its parameters and MLflow run.",
    ),
    "domains": (
        "Per-domain fronts",
        "One panel per domain, largest training set first, points coloured by method. Where a "
        "domain's points fall below its star, sparsity costs that domain AUC; above it, the "
        "sparse models gain. The buttons switch between analytic FLOPs and the measured serving "
        "time of the network that serves the domain (when trials measured it).",
    ),
    "structure": (
        "Learned structure",
        "Pick a front trial. Heatmap: fraction of neurons each domain prunes per layer. Keep maps: "
        "one row per domain, one column per neuron, shared neurons on the left, neurons kept by "
        "the same domains side by side. Overlap: Jaccard index of two domains' kept neurons.",
    ),
    "gain": (
        "Gain by domain size",
        "Test AUC of front trials minus the dense reference, per domain, against the domain's "
        "training rows. Above zero the sparse model wins; AdaSparse expects the largest gains in "
        "small domains (left).",
    ),
    "band": (
        "Sparsity band",
        "Validation AUC against the sparsity each trial reached, coloured by the centre of its "
        "target band; the dashed line is the dense model. The paper finds ~0.15-0.25 best and "
        "above ~0.35 harmful.",
    ),
    "search": (
        "Search diagnostics",
        "Optuna's view of the search: best value per trial, hypervolume of the front over time, "
        "which parameters matter, and how each parameter relates to the main objective.",
    ),
    "trials": (
        "Trials",
        "Every trial with its state, duration, parameters and objectives; click a header to sort. "
        "Front trials are shaded green, failed ones red.",
    ),
    "context": ("Context", "What was studied, on what, with what, and for how long."),
}
GROUPS_EXPLAINED = (
    " Labels carry each domain's true group (synthetic data) and red dots mark same-group pairs: "
    "if similar domains learned similar structures, the dots sit on bright cells."
)


def section(sid: str, blocks: list[Block], more: str = "") -> Section:
    """Section ``sid`` with its title and explanation from TEXT (``more`` appended to it)."""
    title, explain = TEXT[sid]
    return Section(sid, title, explain + more, blocks)


def per_study(data: ReportData) -> Iterator[tuple[StudyInfo, str]]:
    """Each study with the prefix of its headings: "<name>: ", or "" in a one-study report."""
    multi = len(data.studies) > 1
    return ((s, f"{s.name}: " if multi else "") for s in data.studies)


def pareto_section(data: ReportData, color_by: str | None) -> Section:
    done = completed(data.trials)
    if not done.height:
        return section("pareto", [Block(note=NO_POINTS)])
    draw = partial(pareto_figure, data.trials, data.reference, data.reeval, color_by)
    return section("pareto", [Block(figure=cost_toggle(done, draw))])


def domains_section(data: ReportData) -> Section:
    points = domain_points(data.domain_metrics, data.trials)
    if not points.drop_nulls(["val_auc", "flops_ratio"]).height:
        return section("domains", [Block(note=NO_DOMAIN_POINTS)])
    ref = reference_domains(data.domain_metrics)
    draw = partial(domain_fronts_figure, points, data.domains, ref)
    return section("domains", [Block(figure=cost_toggle(points, draw))])


def structure_view(data: ReportData, row: dict) -> StructureView:
    """One front trial's sparsity heatmap, keep map and overlap map (``row``: its trials row)."""
    this_trial = (pl.col("study") == row["study"]) & (pl.col("number") == row["number"])
    keep, layers = data.keep.filter(this_trial), data.layer_sparsity.filter(this_trial)
    domains = data.domains.filter(pl.col("study") == row["study"])
    order = structure_order(keep, domains)
    if not layers.height:  # no per-layer metrics stored: derive them from the keep table
        layers = keep.group_by("domain", "position").agg(sparsity=1 - pl.col("keep_prob").mean())
    label = trial_label(row, len(data.studies) > 1)
    return StructureView(
        key=f"{row['study']}#{row['number']}",
        label=f"{label}, AUC {fmt(row['auc'])}",
        caption=f"{html.escape(label)}: pruner inputs {html.escape(str(row['pruner_inputs']))}; "
        f"mean sparsity {fmt(row['sparsity'], '.3f')}. Domains ordered by similarity of kept neurons.",
        figures=[
            sparsity_heatmap(layers, order, domains, "Sparsity per domain and layer"),
            keep_map_figure(keep, order, domains, "Keep probability per neuron"),
            overlap_figure(keep, order, domains, "Overlap of kept neurons (Jaccard)"),
        ],
    )


def structure_section(data: ReportData) -> Section:
    kept = data.keep.select("study", "number").unique()
    chosen = data.trials.join(kept, on=["study", "number"], how="semi").sort("study", "flops_ratio")
    views = [structure_view(data, row) for row in chosen.iter_rows(named=True)]
    block = Block(views=views) if views else Block(note=NO_KEEP)
    grouped = data.domains["group"].null_count() < data.domains.height
    return section("structure", [block], GROUPS_EXPLAINED if grouped else "")


def gain_section(data: ReportData) -> Section | None:
    gains = domain_gains(data.trials, data.domain_metrics, data.reeval_domains, data.domains)
    return section("gain", [Block(figure=gain_figure(gains))]) if gains.height else None


def band_section(data: ReportData) -> Section | None:
    if not band_varies(data.trials):
        return None
    blocks = [
        Block(
            figure=band_figure(
                data.trials.filter(pl.col("study") == s.name),
                data.reference.filter(pl.col("study") == s.name),
            ),
            title=prefix.removesuffix(": "),
        )
        for s, prefix in per_study(data)
    ]
    return section("band", blocks)


def search_section(data: ReportData) -> Section:
    blocks = [
        Block(figure=d.figure, title=d.title, note=d.note if d.figure is None else "")
        for s, prefix in per_study(data)
        for d in diagnostics(s.study, s.objectives, prefix)
    ]
    return section("search", blocks)


TRIAL_COLUMNS = [
    ("number", "trial", "num"),
    ("state", "state", "text"),
    ("on_front", "front", "text"),
    ("duration_s", "duration s", "num", ".1f"),
    ("method", "method", "text"),
    ("pruner_form", "pruner", "text"),
    ("pruner_inputs", "inputs", "text"),
    ("band", "band", "text"),
    ("auc", "val AUC", "num"),
    ("flops_ratio", "FLOPs ratio", "num", ".3f"),
    ("latency_ratio", "latency ratio", "num", ".3f"),
    ("sparsity", "sparsity", "num", ".3f"),
    ("test_auc", "test AUC", "num"),
    ("test_auc_mean", "test AUC (seeds)", "num"),
]


FRONT_ORDER = {"": 0, "infeasible": 1, "✓": 2}  # the front column sorts in this order


def _trial_cells(r: dict) -> dict:
    """The trials table's composed cells, as (shown text, sort value)."""
    # COMPLETE but over study.flops_budget (an Optuna constraint): never on the front.
    front = "✓" if r["on_front"] else "infeasible" if r.get("feasible") is False else ""
    band = (
        "" if r["band_lo"] is None else f"[{fmt(r['band_lo'], '.2f')}, {fmt(r['band_hi'], '.2f')}]"
    )
    out = r | {"on_front": (front, FRONT_ORDER[front]), "band": (band, band)}
    if r["test_auc_mean"] is not None:
        shown = f"{fmt(r['test_auc_mean'])} ± {r['test_auc_sd']:.4f} (n={r['n_seeds']})"
        out["test_auc_mean"] = (shown, r["test_auc_mean"])
    return out


def trials_section(data: ReportData) -> Section:
    reeval = data.reeval.select("study", "number", "test_auc_mean", "test_auc_sd", "n_seeds")
    t = data.trials.join(reeval, on=["study", "number"], how="left").sort("study", "number")
    cols = [("study", "study", "text")] if len(data.studies) > 1 else []
    cols += TRIAL_COLUMNS
    cols += [
        (p, p.removeprefix("param:"), "num" if t[p].dtype.is_numeric() else "text", ".4g")
        for p in t.columns
        if p.startswith("param:")
    ]
    cols += [("run_id", "MLflow run", "text"), ("fail_reason", "fail reason", "text")]
    rows = list(t.iter_rows(named=True))
    classes = ["front" if r["on_front"] else "failed" if r["state"] == "FAIL" else "" for r in rows]
    return section(
        "trials", [Block(html=table_html(cols, [_trial_cells(r) for r in rows], classes))]
    )


DATASET_COLUMNS = [
    ("domain", "domain", "text"),
    ("group", "true group", "num"),
    ("train_rows", "train rows", "num"),
    ("pos_rate", "positive rate", "num", ".3f"),
    ("oracle_auc", "oracle AUC", "num"),
    ("test_auc", "dense test AUC", "num"),
    ("gap", "gap to oracle", "num"),
]


def _dataset_table(data: ReportData, study: str) -> str:
    ref = reference_domains(data.domain_metrics).filter(pl.col("study") == study)
    d = (
        data.domains.filter(pl.col("study") == study)
        .join(ref.select("domain", "test_auc"), on="domain", how="left")
        .sort("train_rows", descending=True, nulls_last=True)
        .with_columns(gap=pl.col("oracle_auc") - pl.col("test_auc"))
    )
    rows = [
        r
        | {
            "group": (fmt(r["group"]), r["group"]),
            "train_rows": (
                "-" if r["train_rows"] is None else f"{r['train_rows']:,}",
                r["train_rows"],
            ),
        }
        for r in d.iter_rows(named=True)
    ]
    return table_html(DATASET_COLUMNS, rows)


def _moments(texts: Iterable[object]) -> list[dt.datetime]:
    """ISO times as aware datetimes (naive ones, Optuna's, are local time); others left out."""
    out = []
    for text in texts:
        try:
            moment = dt.datetime.fromisoformat(str(text))
        except (TypeError, ValueError):
            continue
        out.append(moment if moment.tzinfo is not None else moment.astimezone())
    return out


def _wall_time(info: StudyInfo, trials: pl.DataFrame) -> str:
    """From the study's start (or its first trial's) to its last finished trial."""
    t = trials.filter(pl.col("study") == info.name)
    running = " (still running)" if (t["state"] == "RUNNING").any() else ""
    busy = f"{running}; trials busy for {t['duration_s'].drop_nulls().sum() / 60:.1f} min in total"
    starts = _moments([info.attrs.get("started_at"), *t["started"].drop_nulls()])
    ends = _moments(t["finished"].drop_nulls())
    if not starts or not ends:
        return f"unknown{busy}"
    first, last = min(starts), max(ends)
    minutes = (last - first).total_seconds() / 60
    return f"{minutes:.1f} min, {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M %Z}{busy}"


def _study_facts(info: StudyInfo, trials: pl.DataFrame) -> list[tuple[str, object]]:
    a = info.attrs
    mlflow = f"{a.get('mlflow_uri', '-')} · experiment {a.get('mlflow_experiment', info.name)}"
    return [
        ("storage", info.storage),
        ("MLflow", mlflow),
        ("parent run", a.get("parent_run_id", "-")),
        ("dense reference run", a.get("reference_run_id", "-")),
        ("objectives", ", ".join(f"{o['name']} ({o['direction']})" for o in info.objectives)),
        ("wall time", _wall_time(info, trials)),
        *[(f"machine: {k}", v) for k, v in (a.get("machine") or {}).items()],
        *[("warning", w) for w in info.warnings],
    ]


def context_section(data: ReportData, versions: dict[str, str]) -> Section:
    blocks = []
    for info, prefix in per_study(data):
        blocks.append(Block(title=f"{prefix}dataset", html=_dataset_table(data, info.name)))
        blocks.append(
            Block(title=f"{prefix}study", html=parts().kv(_study_facts(info, data.trials)))
        )
        if config := info.attrs.get("config"):
            blocks.append(Block(html=parts().details(f"{prefix}study config (resolved)", config)))
    report = parts().kv([("python", platform.python_version()), *versions.items()])
    blocks.append(Block(title="this report", html=report))
    return section("context", blocks)
