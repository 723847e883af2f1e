"""The report's sections, in reading order, from the collected tables: each section is a title,
one line on how to read it, and its figures or tables. Sections that do not apply (no
reference run, a fixed band, no keep probabilities) are left out or replaced by a note."""

from __future__ import annotations

import html
import json
import platform
from collections.abc import Iterator
from functools import partial

import numpy as np
import polars as pl

from adasparse_lab.report.diagnostics import diagnostics
from adasparse_lab.report.domain_figures import (
    domain_fronts_figure,
    domain_picker_figure,
    domain_summary_figure,
    gain_figure,
)
from adasparse_lab.report.figures import band_figure, cost_toggle, pareto_figure
from adasparse_lab.report.html import (
    Block,
    DomainPicker,
    Section,
    StructureView,
    parts,
    table_html,
)
from adasparse_lab.report.structure import (
    keep_map_figure,
    overlap_figure,
    sparsity_heatmap,
)
from adasparse_lab.report.style import fmt
from adasparse_lab.results.claims import HELD, NOT_HELD, ClaimResult, study_claims
from adasparse_lab.results.collect import ReportData, StudyInfo, reference_domains
from adasparse_lab.results.keep import structure_order
from adasparse_lab.results.matched import (
    COST_COLUMNS,
    MATCHED_AT,
    collect_cells,
    format_domain_verdicts,
    format_matched,
    format_verdicts,
    mean_sd,
    per_method,
)
from adasparse_lab.results.tables import (
    band_varies,
    completed,
    domain_facts,
    domain_gains,
    domain_picker_table,
    domain_points,
    domains_by_size,
    near_reference,
    trial_label,
    wall_time,
)

NO_POINTS = "no completed trial with both a validation AUC and a FLOPs ratio yet"
NO_DOMAIN_POINTS = "no per-domain AUC and FLOPs stored in MLflow for completed trials yet"
NO_KEEP = "no keep probabilities stored for front trials"
TEXT = {  # section id -> (title, how to read it), in page order
    "verdicts": (
        "Verdicts: which method is best, beyond seed noise",
        "Each method's best trial on validation, re-trained over seeds and tested: test AUC (mean "
        "± sd over its seeds) at its cost. Below the table, each method against the dense model "
        "and against the best method (chosen on validation), paired by seed, with the 95% "
        "interval of the difference and a Holm correction over the comparisons: better, "
        "indistinguishable or worse; then, per method, the domains where it gains or loses "
        "against the dense model beyond seed noise, and the methods ranked near each cost level. "
        "A method whose budget differs from the others' (fewer trials, failed or pruned) is "
        "flagged and not compared. The same text: python -m adasparse_lab.study.matched.",
    ),
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
    "picker": (
        "Per-domain fronts",
        "Too many domains for one panel each: pick a domain (largest training set first), a true "
        "group, or the k largest or smallest domains; the figure shows each trial's val AUC "
        "against its FLOPs ratio (over several domains: their mean, trial by trial), the front "
        "and the dense reference (star). Below, every domain at once: the test AUC gain of a "
        "front trial over the dense reference against the domain's training rows, one point per "
        "domain (bars: ±1 sd over seeds where the trial was re-evaluated); the menu picks the "
        "trial.",
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
        "Every trial with its state (and, for a failed or pruned trial, the reason), duration, "
        "parameters and objectives; click a header to sort. Front trials are shaded green, "
        "failed ones red.",
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


# Columns the arms and trials tables both show, the same way in each.
FLOPS_RATIO_COLUMN = ("flops_ratio", "FLOPs ratio", "num", ".3f")
SPARSITY_COLUMN = ("sparsity", "sparsity", "num", ".3f")
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
    FLOPS_RATIO_COLUMN,
    SPARSITY_COLUMN,
]


def _claim_cells(r: ClaimResult) -> dict:
    text = (r.spec.text + (f" ({r.note})" if r.note else ""), r.spec.text)
    mean = (f"{r.mean:+.4f}", r.mean) if r.per_seed else ("-", None)
    cells = {"source": r.spec.source, "text": text, "mean": mean, "sd": r.sd}
    return cells | {"n": len(r.per_seed), "verdict": r.verdict}


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
            arms = [
                a | {"test_auc": (f"{fmt(a['test_auc'])} ± {fmt(a['test_auc_sd'])}", a["test_auc"])}
                for a in summary.iter_rows(named=True)
            ]
            arms = table_html(ARM_COLUMNS, arms)
            blocks.append(Block(title=f"{prefix}arms", html=arms))
    return section("claims", blocks) if blocks else None


VERDICT_COLUMNS = [
    ("method", "method", "text"),
    ("cost", "cost ratio", "num", ".3f"),
    ("test_auc", "test AUC (mean ± sd)", "num"),
    ("seeds", "runs", "num"),
    ("setting", "setting", "text"),
]


def verdicts_section(data: ReportData) -> Section | None:
    """Per study with several methods: each method's best on validation, the paired verdicts
    against dense and the best method, per-domain gains and losses, and the methods at each
    cost level (results/matched.py, the numbers ``python -m adasparse_lab.study.matched``
    prints)."""
    blocks = []
    for info, prefix in per_study(data):
        cost = info.objectives[-1]["name"] if info.objectives else ""
        if cost not in COST_COLUMNS:
            continue
        cells = collect_cells(info, cost)
        chosen = per_method(cells)
        if len({c.method for c in chosen}) < 2:
            continue
        rows = [
            {
                "method": f"{c.method} {c.flag_text()}".rstrip(),
                "cost": c.cost_mean,
                "test_auc": (mean_sd(c.auc), float(np.mean(c.auc))),
                "seeds": len(c.auc),
                "setting": c.params,
            }
            for c in chosen
        ]
        dense = [c for c in chosen if c.method == "dense"]
        lines = format_verdicts(chosen, dense)
        if dense:
            lines += ["", *format_domain_verdicts(chosen, dense[0])]
        lines += ["", format_matched(cells, MATCHED_AT, cost)]
        text = f"<pre class='verdicts'>{html.escape(chr(10).join(lines))}</pre>"
        blocks.append(
            Block(
                title=f"{prefix}each method's best", html=table_html(VERDICT_COLUMNS, rows) + text
            )
        )
    return section("verdicts", blocks) if blocks else None


def pareto_section(data: ReportData, color_by: str | None) -> Section:
    done = completed(data.trials)
    if not done.height:
        return section("pareto", [Block(note=NO_POINTS)])
    draw = partial(pareto_figure, data.trials, data.reference, data.reeval, color_by)
    return section("pareto", [Block(figure=cost_toggle(done, draw))])


GRID_MAX_DOMAINS = 24  # up to this many domains: one panel each; more: the picker and summary


def many_domains(data: ReportData) -> bool:
    return len(domains_by_size(data.domains)) > GRID_MAX_DOMAINS


def domains_section(data: ReportData) -> Section:
    points = domain_points(data.domain_metrics, data.trials)
    if not points.drop_nulls(["val_auc", "flops_ratio"]).height:
        return section("domains", [Block(note=NO_DOMAIN_POINTS)])
    ref = reference_domains(data.domain_metrics)
    if many_domains(data):
        return picker_section(data, points, ref)
    draw = partial(domain_fronts_figure, points, data.domains, ref)
    return section("domains", [Block(figure=cost_toggle(points, draw))])


def picker_options(table: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The picker's choices: k largest/smallest, true groups, every domain by size."""
    n = len(table["domains"])
    sets = [(f"largest:{k}", f"{k} largest domains") for k in table["k"]]
    sets += [(f"smallest:{k}", f"{k} smallest domains") for k in table["k"]]
    groups = [(f"group:{g}", f"group {g} ({len(ix)} domains)") for g, ix in table["groups"].items()]
    one = [
        (f"domain:{d}", d if rows is None else f"{d} · {rows:,} rows")
        for d, rows in zip(table["domains"], table["rows"])
    ]
    out = [(f"each domain ({n:,}, largest first)", one), ("largest / smallest", sets)]
    return out + ([("true groups (synthetic data)", groups)] if groups else [])


def picker_section(data: ReportData, points: pl.DataFrame, ref: pl.DataFrame) -> Section:
    """Many domains: a picker redrawing one figure, and all domains' gains in one figure."""
    table = domain_picker_table(points, data.domains, ref)
    compact = json.dumps(table, separators=(",", ":")).replace("</", "<\\/")
    picker = DomainPicker(picker_options(table), compact)
    blocks = [Block(figure=domain_picker_figure(table), picker=picker)]
    gains = domain_gains(data.trials, data.domain_metrics, data.reeval_domains, data.domains)
    if gains.height:
        blocks.append(Block(figure=domain_summary_figure(gains)))
    title, explain = TEXT["picker"]
    return Section("domains", title, explain, blocks)


STRUCTURE_MAX_DOMAINS = 60  # the structure figures' rows (the overlap map grows as their square)


def _shown_domains(domains: pl.DataFrame) -> tuple[list[str], str]:
    """The structure figures' domains: all, or the STRUCTURE_MAX_DOMAINS largest of many,
    with the words that say so in their titles."""
    by_size = [d for d, _ in domains_by_size(domains)]
    if len(by_size) <= STRUCTURE_MAX_DOMAINS:
        return by_size, ""
    return by_size[
        :STRUCTURE_MAX_DOMAINS
    ], f" ({STRUCTURE_MAX_DOMAINS} largest of {len(by_size):,} domains)"


def structure_view(data: ReportData, row: dict) -> StructureView:
    """One front trial's sparsity heatmap, keep map and overlap map (``row``: its trials row)."""
    this_trial = (pl.col("study") == row["study"]) & (pl.col("number") == row["number"])
    shown, of = _shown_domains(data.domains.filter(pl.col("study") == row["study"]))
    this_trial &= pl.col("domain").is_in(shown)
    keep, layers = data.keep.filter(this_trial), data.layer_sparsity.filter(this_trial)
    domains = data.domains.filter((pl.col("study") == row["study"]) & pl.col("domain").is_in(shown))
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
            sparsity_heatmap(layers, order, domains, "Sparsity per domain and layer" + of),
            keep_map_figure(keep, order, domains, "Keep probability per neuron" + of),
            overlap_figure(keep, order, domains, "Overlap of kept neurons (Jaccard)" + of),
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
    if many_domains(data):  # the domains section's summary figure shows the gains
        return None
    gains = domain_gains(data.trials, data.domain_metrics, data.reeval_domains, data.domains)
    return section("gain", [Block(figure=gain_figure(gains))]) if gains.height else None


def band_section(data: ReportData) -> Section | None:
    if not band_varies(data.trials):
        return None
    by_study = [
        (pl.col("study") == s.name, prefix.removesuffix(": ")) for s, prefix in per_study(data)
    ]
    figures = [
        (band_figure(data.trials.filter(f), data.reference.filter(f)), t) for f, t in by_study
    ]
    return section("band", [Block(figure=fig, title=title) for fig, title in figures])


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
    ("fail_reason", "reason", "text"),  # why a trial failed or was pruned
    ("duration_s", "duration s", "num", ".1f"),
    ("method", "method", "text"),
    ("pruner_form", "pruner", "text"),
    ("pruner_inputs", "inputs", "text"),
    ("band", "band", "text"),
    ("auc", "val AUC", "num"),
    FLOPS_RATIO_COLUMN,
    ("latency_ratio", "latency ratio", "num", ".3f"),
    SPARSITY_COLUMN,
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
    cols += [("run_id", "MLflow run", "text")]
    rows = list(t.iter_rows(named=True))
    classes = ["front" if r["on_front"] else "failed" if r["state"] == "FAIL" else "" for r in rows]
    cells = [_trial_cells(r) for r in rows]
    return section("trials", [Block(html=table_html(cols, cells, classes))])


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
    d = domain_facts(data.domains, data.domain_metrics, study)
    rows = [
        r | {"train_rows": ("-" if (n := r["train_rows"]) is None else f"{n:,}", n)}
        for r in d.iter_rows(named=True)
    ]
    return table_html(DATASET_COLUMNS, rows)


def _wall_time(info: StudyInfo, trials: pl.DataFrame) -> str:
    w = wall_time(info, trials)
    running = " (still running)" if w.running else ""
    busy = f"{running}; trials busy for {w.busy_minutes:.1f} min in total"
    if w.minutes is None:
        return f"unknown{busy}"
    return f"{w.minutes:.1f} min, {w.first:%Y-%m-%d %H:%M} to {w.last:%Y-%m-%d %H:%M %Z}{busy}"


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


def headline(data: ReportData) -> list[str]:
    """Short sentences for the top of the report, one study at a time."""
    lines = []
    for (study,), t in data.trials.group_by("study", maintain_order=True):
        counts = sorted(t.group_by("state").len().iter_rows())
        states = ", ".join(f"{n} {s.lower()}" for s, n in counts)
        front = t.filter(pl.col("on_front"))
        lines.append(
            f"<b>{study}</b>: {t.height} trials ({states}); {front.height} on the Pareto front."
        )
        ref = data.reference.filter(pl.col("study") == study)
        if front.height and ref.height and (ref_auc := ref["auc"][0]) is not None:
            r = near_reference(front, ref_auc)
            gap = f"AUC {fmt(r['auc'])} ({r['auc'] - ref_auc:+.4f})"
            lines.append(
                f"Cheapest trial within 0.001 val AUC of the dense model ({fmt(ref_auc)}): trial "
                f"{r['number']} ({r.get('method') or r['pruner_form']}) at FLOPs ratio "
                f"{fmt(r['flops_ratio'], '.3f')}, {gap}."
                if r["near"]
                else f"No front trial reaches the dense val AUC ({fmt(ref_auc)}); the best is trial "
                f"{r['number']} at {gap}, FLOPs ratio {fmt(r['flops_ratio'], '.3f')}."
            )
        if (rv := data.reeval.filter(pl.col("study") == study)).height:
            seeds = int(rv["n_seeds"].max())
            lines.append(f"{rv.height} front trial(s) re-evaluated on test over {seeds} seed(s).")
    return lines
