"""Methods at matched cost: which method gives the best test AUC at a given FLOPs (or latency)
ratio? Read from a study read back by results.collect (Optuna trials + their MLflow runs), so
it can be shown for any finished or running study: by ``python -m adasparse_lab.study.matched``
(study/matched.py), at a study's end, and at the top of its report (report/sections.py).

A *cell* is one setting of a method (a trial's parameters without ``seed``); its test AUC is the
mean and standard deviation over every seed that ran it (grid seeds, re-evaluation seeds) and
its cost the mean cost ratio. For each method and each anchor ratio the table shows the cell
whose cost is nearest to the anchor (within ``tolerance``), so methods are compared at the
same compute, not at the same nominal sparsity.

Fair means equal budget (results/budgets.py): in a grid study (``study.grid``, every method
given the same trials) or the equal-budget comparison (``study.trials_per_method``), a method that had fewer trials than the others, or whose trials failed
or were pruned, carries a flag on its rows (``[budget 3/5 complete (others 5)]``) and its
comparisons are printed without a verdict; a method none of whose trials completed is named,
not left out. In a sampled study the sampler shares the trials out unequally by design: the
table says so on one line, with each method's trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.results.budgets import Budget, budget_flags, method_budgets
from adasparse_lab.results.collect import StudyInfo
from adasparse_lab.results.runs import RUN_METRICS
from adasparse_lab.results.verdicts import (
    BETTER,
    UNKNOWN,
    WORSE,
    Comparison,
    decide,
    paired,
    verdicts,
)

# cost objective (an MLflow metric name) -> its column in results.runs' runs table
MATCHED_AT = (0.5, 0.8)  # the FLOPs (or latency) ratios methods are ranked at: study end, report
COST_COLUMNS = {RUN_METRICS[c]: c for c in ("flops_ratio", "latency_ratio")}


@dataclass
class Cell:
    method: str
    params: str  # the setting, without the seed
    auc: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)  # validation mean per-domain AUC per seed
    domains: dict[str, list[float]] = field(default_factory=dict)  # test AUC per seed
    seeds: list[int | None] = field(default_factory=list)  # each run's seed (None: unknown)
    domain_seeds: dict[str, dict[int, float]] = field(default_factory=dict)  # {d: {seed: auc}}
    budget: Budget | None = None  # its method's trials (None: not a searched method, the reference)
    flag: str = ""  # why its method's budget is not the others' ('': it is)

    def by_seed(self) -> dict[int, float]:
        """{seed: test AUC} of the runs whose seed is known (the first run of a seed)."""
        out: dict[int, float] = {}
        for seed, auc in zip(self.seeds, self.auc):
            if seed is not None:
                out.setdefault(seed, auc)
        return out

    @property
    def cost_mean(self) -> float:
        return float(np.mean(self.cost))

    def flag_text(self) -> str:
        return f"[{self.flag}]" if self.flag else ""

    def absent_text(self) -> str:
        """The line of a method without a measured run (a cell with no AUC)."""
        done = self.budget is not None and self.budget.complete > 0
        what = "no completed trial measured a test AUC" if done else "no trial completed"
        return f"{self.method}: {what} {self.flag_text()}".rstrip()

    def auc_text(self) -> str:
        sd = f"±{np.std(self.auc, ddof=1):.4f}" if len(self.auc) > 1 else ""
        return f"{np.mean(self.auc):.4f}{sd} (n={len(self.auc)})"


def collect_cells(info: StudyInfo, cost: str) -> list[Cell]:
    """Every COMPLETE trial and its re-evaluation runs, grouped by (method, setting), and the
    dense reference: from the study read back by results.collect (``info.runs``, the one reader
    of a study's MLflow runs). ``cost``: the cost objective's metric name. Each cell carries its
    method's budget and flag (results/budgets.py); a method with trials but no measured run is
    one cell without runs (``auc`` empty), so that tables name it."""
    cells = _measured_cells(info, cost)
    budgets = method_budgets(info.study.get_trials(deepcopy=False))
    flags = budget_flags(budgets) if budgets_equal_by_design(info) else {}
    for c in cells:
        c.budget, c.flag = budgets.get(c.method), flags.get(c.method, "")
    measured = {c.method for c in cells}
    absent = [
        Cell(m, "", budget=b, flag=flags.get(m, ""))
        for m, b in budgets.items()
        if m not in measured
    ]
    return cells + absent


def budgets_equal_by_design(info: StudyInfo) -> bool:
    """Whether the study itself chose every method's trials (a grid, ``study.grid``, the
    equal-budget comparison, ``study.trials_per_method``, or only enqueued points), so that a method with fewer than the others is flagged. A sampler shares
    trials out as it will (TPE favours the promising methods): there budgets differ by design
    and ``format_matched`` says so once instead of flagging every method but one."""
    config = OmegaConf.create(info.attrs.get("config") or "{}")
    if OmegaConf.select(config, "study.grid", default=False):
        return True
    if OmegaConf.select(config, "study.trials_per_method", default=None):
        return True  # the equal-budget comparison: each method's share enqueued by name
    trials = info.study.get_trials(deepcopy=False)
    return bool(trials) and all("fixed_params" in t.system_attrs for t in trials)


def _measured_cells(info: StudyInfo, cost: str) -> list[Cell]:
    column = COST_COLUMNS.get(cost)
    if column is None:
        raise ConfigError(f"cost={cost!r}: choose one of {sorted(COST_COLUMNS)}")
    runs, per_domain = info.runs.runs, info.runs.domains.drop_nulls("test_auc")
    domain_aucs: dict[str, dict[str, float]] = {}
    for r in per_domain.iter_rows(named=True):
        domain_aucs.setdefault(r["run_id"], {})[r["domain"]] = r["test_auc"]
    cells: dict[tuple[str, str], Cell] = {}
    trial_cells: dict[int, tuple[Cell, str | None, int | None]] = {}
    for t in info.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        setting = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()) if k != "seed")
        method = t.user_attrs.get("method", t.user_attrs.get("pruner_form", "?"))
        cell = cells.setdefault((method, setting), Cell(method, setting))
        seed = t.params.get("seed")  # a grid's seed; else the trial's own run pairs with nothing
        trial_cells[t.number] = (cell, t.user_attrs.get("mlflow_run_id"), seed)
    for r in runs.iter_rows(named=True):
        cell, trial_run, seed = trial_cells.get(r["number"], (None, None, None))
        if r["kind"] == "trial":  # a COMPLETE trial's own run, whatever its status
            cell = cell if r["run_id"] == trial_run else None
        elif r["status"] != "FINISHED":  # re-evaluation and reference runs: finished ones
            cell = None
        elif r["kind"] == "reference":
            cell = cells.setdefault(("dense", "reference"), Cell("dense", "reference"))
        if cell is not None:
            seed = seed if r["kind"] == "trial" else r["seed"]
            _add(cell, r, domain_aucs.get(r["run_id"], {}), column, seed)
    return [c for c in cells.values() if c.auc]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _add(
    cell: Cell, run: dict, domain_aucs: dict[str, float], column: str, seed: int | None
) -> None:
    """One run (a row of results.runs' runs table) into ``cell``, if it has a test AUC and a
    finite cost."""
    value = run[column]
    if run["test_auc"] is None or value is None or not math.isfinite(value):
        return
    cell.auc.append(run["test_auc"])
    cell.seeds.append(seed)
    cell.cost.append(value)
    cell.val.append(math.nan if run["auc"] is None else run["auc"])
    for domain, auc in domain_aucs.items():
        cell.domains.setdefault(domain, []).append(auc)
        if seed is not None:  # (the first run of a seed, as by_seed)
            cell.domain_seeds.setdefault(domain, {}).setdefault(seed, auc)


def measured(cells: list[Cell]) -> list[Cell]:
    """The cells with runs (not those naming a method that measured nothing)."""
    return [c for c in cells if c.auc]


def per_method(cells: list[Cell]) -> list[Cell]:
    """Each method's cell with the most seeds (re-evaluated), ties broken by validation AUC;
    ordered by cost."""
    best: dict[str, Cell] = {}
    for c in measured(cells):
        key = (len(c.auc), float(np.nanmean(c.val)) if c.val else -math.inf)
        old = best.get(c.method)
        if old is None or key > (len(old.auc), float(np.nanmean(old.val))):
            best[c.method] = c
    return sorted(best.values(), key=lambda c: c.cost_mean)


def mean_sd(values: list[float]) -> str:
    sd = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
    return f"{np.mean(values):.4f}{sd}"


def format_per_method(cells: list[Cell], cost: str) -> str:
    """Markdown: per method its best cell (cost, test mean per-domain AUC mean ± sd over seeds,
    the setting; a method short of the others' budget flagged beside its name), then the
    per-domain test AUC of each (mean ± sd over the same seeds), the verdicts of each against the
    dense model and the best method (``format_verdicts``: paired by seed, Holm-corrected), then
    the methods that measured nothing."""
    chosen = per_method(cells)
    lines = [
        f"| method | {cost} | test mean per-domain AUC | seeds | setting |",
        "|---|---|---|---|---|",
    ]
    for c in chosen:
        name = f"{c.method} {c.flag_text()}".rstrip()
        lines.append(
            f"| {name} | {c.cost_mean:.3f} | {mean_sd(c.auc)} | {len(c.auc)} | {c.params} |"
        )
    domains = sorted({d for c in chosen for d in c.domains})
    lines += ["", "| domain | " + " | ".join(c.method for c in chosen) + " |"]
    lines.append("|---" * (len(chosen) + 1) + "|")
    for d in domains:
        row = [mean_sd(c.domains[d]) if c.domains.get(d) else "-" for c in chosen]
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    absent = [c.absent_text() for c in cells if not c.auc]
    dense = [c for c in chosen if c.method == "dense"]
    verdict = format_verdicts(chosen, dense)
    if verdict:
        lines += [
            "",
            "Each method's best against dense and against the best (validation):",
            *verdict,
        ]
    if dense:
        lines += ["", *format_domain_verdicts(chosen, dense[0])]
    return "\n".join(lines + ([""] + absent if absent else []))


def format_domain_verdicts(chosen: list[Cell], dense: Cell) -> list[str]:
    """Per method, the domains where it gains or loses against the dense model beyond seed
    noise: each domain's test AUC paired by seed, Holm-corrected over the method's domains
    (results/verdicts.py)."""
    lines = [
        "Per domain, each method against dense (test AUC paired by seed, Holm over its domains):"
    ]
    for c in chosen:
        if c.method == "dense":
            continue
        if c.flag:
            lines.append(f"  {c.method}: not an equal-budget comparison ({c.flag})")
            continue
        family = decide(
            [
                paired(d, seeds, "dense", dense.domain_seeds[d])
                for d, seeds in sorted(c.domain_seeds.items())
                if d in dense.domain_seeds
            ]
        )
        if not any(v.n >= 2 for v in family):
            lines.append(f"  {c.method}: fewer than 2 paired seeds, no verdict")
            continue
        moved = {
            word: ", ".join(
                f"{v.method} {v.diff:+.4f} [{v.low:+.4f}, {v.high:+.4f}]"
                for v in family
                if v.verdict == verdict
            )  # fmt: skip
            for word, verdict in (("gains in", BETTER), ("loses in", WORSE))
        }
        said = "; ".join(f"{word} {where}" for word, where in moved.items() if where)
        lines.append(
            f"  {c.method}: {said or 'no domain differs beyond seed noise'} "
            f"({len(family)} domains, {max(v.n for v in family)} paired seeds)"
        )
    return lines


def nearest(cells: list[Cell], anchor: float, tolerance: float) -> dict[str, Cell]:
    """Per method, its cell with the cost nearest to ``anchor`` (if within ``tolerance``),
    among its cells run over 2 or more known seeds if it has any there (re-evaluated, chosen on
    validation), so that the comparisons below have seeds to pair."""
    best: dict[str, Cell] = {}

    def key(c: Cell) -> tuple[bool, float]:  # cells with paired seeds first: a verdict needs 2
        return (len(c.by_seed()) < 2, abs(c.cost_mean - anchor))

    for c in measured(cells):
        if abs(c.cost_mean - anchor) <= tolerance and (
            c.method not in best or key(c) < key(best[c.method])
        ):
            best[c.method] = c
    return best


def format_matched(
    cells: list[Cell], anchors: Sequence[float], cost: str, tolerance: float = 0.15
) -> str:
    """One block per anchor: methods ranked by mean test AUC at about that cost."""
    lines = [f"Methods at matched cost ({cost}; test mean per-domain AUC, mean±sd over seeds)"]
    budgets = {c.method: c.budget for c in cells if c.budget is not None}
    if len(set(budgets.values())) > 1 and not any(c.flag for c in cells):
        shares = ", ".join(f"{m} {b.text()}" for m, b in budgets.items())
        lines.append(
            f"  trials per method (sampled by the search, unequal by design): {shares}; "
            "a grid study gives each method the same"
        )
    dense = [c for c in measured(cells) if c.method == "dense"]
    if dense:
        pooled = Cell(
            "dense", "", [a for c in dense for a in c.auc], [x for c in dense for x in c.cost]
        )
        flag = max(c.flag_text() for c in dense)
        lines.append(f"  dense model: {pooled.auc_text()} at ratio {pooled.cost_mean:.3f} {flag}")
        lines[-1] = lines[-1].rstrip()
    lines += [f"  {c.absent_text()}: in no comparison below" for c in cells if not c.auc]
    for anchor in anchors:
        found = sorted(nearest(cells, anchor, tolerance).values(), key=lambda c: -np.mean(c.auc))
        lines.append(f"at ratio ~{anchor:g} (nearest cell within ±{tolerance:g}):")
        if not found:
            lines.append("  (no method ran near this cost)")
        for rank, c in enumerate(found, start=1):
            lines.append(
                f"  {rank:>2}. {c.method:<32}{c.auc_text():<28}ratio {c.cost_mean:.3f}  {c.params}"
                + (f"  {c.flag_text()}" if c.flag else "")
            )
        lines += format_verdicts(found, dense)
    return "\n".join(lines)


def format_verdicts(found: list[Cell], dense: list[Cell]) -> list[str]:
    """Each method at an anchor against the dense model and against the best method (chosen on
    validation among the methods of equal budget, and with paired seeds if any has), paired by seed, Holm-corrected over the
    anchor's comparisons between methods of equal budget (results/verdicts.py). A comparison
    with a flagged method shows its paired difference and no verdict."""
    if not found or not dense:
        return []
    cells = {c.method: c for c in found} | {"dense": max(dense, key=lambda c: len(c.by_seed()))}
    fair = [c for c in found if not c.flag] or found
    fair = [c for c in fair if len(c.by_seed()) >= 2] or fair  # a best to pair with
    best = max(fair, key=lambda c: float(np.nanmean(c.val)) if c.val else -math.inf).method
    _, family = verdicts({m: c.by_seed() for m, c in cells.items()}, "dense", best)
    flags = {m: c.flag for m, c in cells.items() if c.flag}
    equal = decide([c for c in family if not {c.method, c.against} & set(flags)])
    unequal = [c for c in family if {c.method, c.against} & set(flags)]
    lines = []
    if equal:
        lines.append(f"  paired by seed, Holm-corrected over these {len(equal)} comparisons:")
    for c in equal:
        if c.verdict == UNKNOWN:
            lines.append(f"      {c.method} vs {c.against}: {c.n} paired seed(s), no verdict")
            continue
        lines.append(
            f"      {c.method} vs {c.against}: {c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}],"
            f" Holm p {c.p_holm:.3g}: {c.verdict} ({c.n} paired seeds)"
        )
    if unequal:
        lines.append("  paired by seed, methods of unequal budget (95% interval, uncorrected):")
    lines += [_unequal_line(c, flags) for c in unequal]
    return lines


def _unequal_line(c: Comparison, flags: dict[str, str]) -> str:
    why = "; ".join(f"{m}: {flags[m]}" for m in (c.method, c.against) if m in flags)
    numbers = (
        f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}] ({c.n} paired seeds)"
        if c.n >= 2
        else f"{c.n} paired seed(s)"
    )
    return f"      {c.method} vs {c.against}: {numbers}: not an equal-budget comparison ({why})"
