"""Search efficiency: the same study run plain and with early stopping (study.early_stop=moasha),
over several study seeds, each as a real study in this process. For each run it prints the
hypervolume of the COMPLETE front against the cumulative CPU-seconds of the trials (fit,
evaluation and the trial's own bookkeeping: ``cpu_s``, process time, both threads counted), in
the order the trials ended, and for each seed how much of the plain run's CPU the early-stopped
run needed to reach the plain run's final hypervolume.

The early-stopped run counts its budget in COMPLETE trials (``study.early_stop.budget=complete``),
so it runs on past a plain study's compute. With one worker a ``budget=rows`` study asks the same
trials in the same order and ends where the trials' rows first reach ``study.n_trials``, so its
front is this run's at that point: printed too ("at equal rows"), with its share of the plain
CPU and its hypervolume against the plain run's.

Seeds run one after another in this process, or ``--search-jobs N`` at a time, each in its own
process with ``--threads`` torch threads (default: the usable CPUs shared out, at least one
each). The trials and their values are the same either way; the CPU-seconds of processes that
share the cores read a few points higher than those of one process alone.

``python -m adasparse_lab.bench --only search`` (the main study, 3 seeds: about 40 min on 2 cores)
``python -m adasparse_lab.bench --only search --search-jobs 2 --search-seeds 0 1 2 3 4 5``
``python -m adasparse_lab.bench --only search --search-study quick --search-seeds 0 1``
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState
from scipy import stats

from adasparse_lab.bench.workload import CONF, data_overrides
from adasparse_lab.results.front import search_curve
from adasparse_lab.study.driver import StudyRunner
from adasparse_lab.study.settings import workers_and_threads

MODES = ("none", "moasha")


@dataclass
class SearchRun:
    mode: str
    seed: int
    complete: int
    pruned: int
    failed: int
    cpu_s: list[float]  # cumulative, after each ended trial
    hypervolume: list[float]  # of the COMPLETE front, after each ended trial
    rows: list[float] = field(default_factory=list)  # trials' rows spent, after each (budget=rows)
    n_trials: int = 0

    @property
    def total_cpu_s(self) -> float:
        return self.cpu_s[-1] if self.cpu_s else 0.0

    @property
    def final_hypervolume(self) -> float:
        return self.hypervolume[-1] if self.hypervolume else 0.0

    def at_equal_rows(self) -> tuple[float, float] | None:
        """(CPU-seconds, hypervolume) when the trials' rows first reached ``n_trials``: where a
        ``study.early_stop.budget=rows`` study with the same seed ends (None: never reached)."""
        for cpu, hv, rows in zip(self.cpu_s, self.hypervolume, self.rows):
            if rows >= self.n_trials - 1e-9:
                return cpu, hv
        return None

    def cpu_to_reach(self, target: float) -> float | None:
        """CPU-seconds at which the hypervolume first reached ``target`` (None: never)."""
        for cpu, hv in zip(self.cpu_s, self.hypervolume):
            if hv >= target - 1e-12:
                return cpu
        return None


def overrides(
    study: str, mode: str, seed: int, n_trials: int, data: str, tmp: str, extra: Sequence[str] = ()
) -> list[str]:
    """The shipped study, minus its end (no reference, no re-evaluation, no model logging),
    with the bench's ``extra`` overrides last."""
    out = [
        f"+study={study}", f"study.name=search-{mode}-{seed}", f"study.sampler.seed={seed}",
        f"study.n_trials={n_trials}", f"study.early_stop.kind={mode}",
        "study.early_stop.budget=complete", "study.reference=false",
        "study.reeval.max_trials=0", "study.log_models=none", "train.progress=false",
        f"paths.studies={tmp}/studies", f"paths.reports={tmp}/reports", f"paths.cache={tmp}/cache",
    ]  # fmt: skip
    return out + data_overrides(data) + list(extra)


def run_search(
    study: str, mode: str, seed: int, n_trials: int, data: str, extra: Sequence[str] = ()
) -> SearchRun:
    with tempfile.TemporaryDirectory() as tmp:
        args = overrides(study, mode, seed, n_trials, data, tmp, extra)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            base = compose("config", overrides=args)
            runner = StudyRunner(base, lambda more: compose("config", overrides=[*args, *more]))
            outcome = runner.run()
        trials = outcome.study.get_trials()
        s = runner.settings
        steps = search_curve(trials, s.directions, s.hypervolume_reference)
    states = [t.state for t in trials]
    rows = replace(s.early_stop, budget="rows")  # what a budget=rows study would count
    by_number = {t.number: t for t in trials}
    spent = np.cumsum([rows.spent([by_number[number]]) for number, *_ in steps]).tolist()
    return SearchRun(
        mode=mode,
        seed=seed,
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        cpu_s=[cpu for _, _, cpu, _ in steps],
        hypervolume=[hv for _, _, _, hv in steps],
        rows=spent,
        n_trials=n_trials,
    )


def run_search_bench(
    study: str = "sparsity",
    seeds=(0, 1, 2),
    n_trials: int = 20,
    data: str = "synthetic",
    extra: Sequence[str] = (),
    jobs: int = 1,
    threads: int | None = None,
) -> list[SearchRun]:
    """Both modes of every seed, in the order of ``seeds``: in this process, or ``jobs`` seeds at
    a time in processes of their own with ``threads`` torch threads each (default: the usable
    CPUs shared out as ``study.threads=auto`` shares them among workers)."""
    if jobs <= 1:
        runs = []
        for seed in seeds:
            runs += _seed_runs(study, seed, n_trials, data, tuple(extra))
        return runs
    _, threads = workers_and_threads({"workers": jobs, "threads": threads or "auto"})
    print(
        f"    {jobs} seeds at a time, one process each, {threads} torch thread(s) each", flush=True
    )
    by_seed: dict[int, list[SearchRun]] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch or Hydra state
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:  # fmt: skip
        pending = {
            pool.submit(_seed_runs, study, seed, n_trials, data, tuple(extra), False): seed
            for seed in seeds
        }
        for done in as_completed(pending):
            by_seed[pending[done]] = done.result()
            for run in by_seed[pending[done]]:
                print(format_run(run), flush=True)
    return [run for seed in seeds for run in by_seed[seed]]


def _seed_runs(
    study: str, seed: int, n_trials: int, data: str, extra: tuple[str, ...], show: bool = True
) -> list[SearchRun]:
    """One seed, plain then early-stopped: interleaved, so both run under the same load."""
    runs = []
    for mode in MODES:
        runs.append(run_search(study, mode, seed, n_trials, data, extra))
        if show:
            print(format_run(runs[-1]), flush=True)
    return runs


def format_run(r: SearchRun) -> str:
    every = max(1, len(r.cpu_s) // 8)
    points = " ".join(f"{c:.0f}:{h:.4f}" for c, h in zip(r.cpu_s[::every], r.hypervolume[::every]))
    equal = r.at_equal_rows() if r.mode != "none" else None
    at_rows = (
        f"; at equal rows ({r.n_trials} trials' worth) {equal[0]:.0f} CPU-s, "
        f"hypervolume {equal[1]:.4f}"
        if equal
        else ""
    )
    return (
        f"    seed {r.seed} {r.mode:<6}: {r.complete} complete, {r.pruned} pruned, {r.failed} failed;"
        f" {r.total_cpu_s:.0f} CPU-s, final hypervolume {r.final_hypervolume:.4f}{at_rows}"
        f"   (CPU-s:hypervolume {points})"
    )


def summary(runs: list[SearchRun]) -> dict:
    """Per seed: the share of the plain run's CPU-seconds the early-stopped run needed to reach
    the plain run's final hypervolume (None: it never did), and where a ``budget=rows`` study
    ends; over seeds: the median share and its quartiles, and how many seeds end higher at
    equal rows with a two-sided sign test (a difference over seeds is a claim)."""
    shares, equal_rows = {}, {}
    for seed in sorted({r.seed for r in runs}):
        plain = next(r for r in runs if r.seed == seed and r.mode == "none")
        early = next(r for r in runs if r.seed == seed and r.mode == "moasha")
        reached = early.cpu_to_reach(plain.final_hypervolume)
        shares[seed] = None if reached is None else reached / plain.total_cpu_s
        at = early.at_equal_rows()
        equal_rows[seed] = None if at is None else {
            "cpu_share": at[0] / plain.total_cpu_s,
            "hypervolume": at[1],
            "plain_hypervolume": plain.final_hypervolume,
        }  # fmt: skip
    values = np.array([v if v is not None else np.inf for v in shares.values()])
    median = float(np.median(values))
    quartiles = [float(np.quantile(values, q, method="nearest")) for q in (0.25, 0.75)]
    return {
        "share_by_seed": shares,
        "median_share": median if np.isfinite(values).any() else None,
        "share_quartiles": quartiles,
        "equal_rows_by_seed": equal_rows,
        "equal_rows": _over_seeds([at for at in equal_rows.values() if at is not None]),
    }


def _over_seeds(ends: list[dict]) -> dict | None:
    """The early-stopped ends at equal rows against the plain finals, over seeds."""
    if not ends:
        return None
    diffs = [at["hypervolume"] - at["plain_hypervolume"] for at in ends]
    higher, lower = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return {
        "seeds": len(ends),
        "higher": higher,
        "lower": lower,
        "sign_test_p": sign_test(higher, lower),
        "median_difference": float(np.median(diffs)),
        "median_cpu_share": float(np.median([at["cpu_share"] for at in ends])),
    }


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of ``wins`` against ``losses`` (ties left out)."""
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def _percent(share: float | None) -> str:
    return "never" if share is None or not np.isfinite(share) else f"{100 * share:.0f}%"


def format_search(runs: list[SearchRun], study: str, data: str, extra: Sequence[str] = ()) -> str:
    s = summary(runs)
    also = f" with {' '.join(extra)}" if extra else ""
    lines = [f"[11] search  +study={study} on {data}{also}: plain vs early stopping (moasha)"]
    lines += [format_run(r) for r in runs]
    for seed, share in s["share_by_seed"].items():
        text = "never" if share is None else f"at {100 * share:.0f}% of the plain run's CPU-s"
        lines.append(f"    seed {seed}: early stopping reached the plain final hypervolume {text}")
    for seed, at in s["equal_rows_by_seed"].items():
        if at is None:
            continue
        diff = at["hypervolume"] - at["plain_hypervolume"]
        lines.append(
            f"    seed {seed}: at equal rows (study.early_stop.budget=rows) early stopping spent "
            f"{100 * at['cpu_share']:.0f}% of the plain CPU-s for hypervolume "
            f"{at['hypervolume']:.4f} against {at['plain_hypervolume']:.4f} ({diff:+.4f})"
        )
    spread = ""
    if len(s["share_by_seed"]) >= 4:
        low, high = s["share_quartiles"]
        spread = f" (quartiles {_percent(low)} and {_percent(high)})"
    lines.append(
        f"    median: {_percent(s['median_share'])}{spread} of the plain run's CPU-seconds"
        " (target <= 50%)"
    )
    if (eq := s["equal_rows"]) and eq["seeds"] > 1:
        lines.append(
            f"    at equal rows: higher on {eq['higher']} of {eq['seeds']} seeds, lower on "
            f"{eq['lower']} (two-sided sign test p = {eq['sign_test_p']:.3g}); median difference "
            f"{eq['median_difference']:+.4f} for {100 * eq['median_cpu_share']:.0f}% of the "
            "plain CPU-s"
        )
    return "\n".join(lines)


def as_json(runs: list[SearchRun]) -> dict:
    return {"runs": [asdict(r) for r in runs], "summary": summary(runs)}
