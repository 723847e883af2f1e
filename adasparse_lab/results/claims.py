"""The paper's claims against a study's own trials: each claim of ``study.claims`` (see
conf/study/paper.yaml) becomes one measured effect per seed, its mean ± sd over seeds, and a
verdict. Reads what results.collect read back (trials, per-domain metrics, domain sizes and
groups) plus the keep probabilities of the trials a structure claim needs; never a trainer
object. Their HTML is the report's (report/sections.py), their Markdown the command's
(study/claims.py).

An *arm* is one value of the space parameter ``study.claims.arm`` (e.g. ``fusion``); arms pair
up by the value of ``study.claims.seed``. Effects are signed so that > 0 means the claim held:

- ``better``: test mean per-domain AUC of ``arm`` minus that of ``versus``, per seed; with
  several ``versus`` arms, minus the runner-up: the one with the best *validation* mean
  per-domain AUC over the seeds it shares with ``arm`` (chosen without looking at test).
- ``small_domains``: per-domain test AUC gain of ``arm`` over ``versus`` (same seed), mean over
  the smaller half of the domains (train rows) minus mean over the larger half (the middle
  domain of an odd count is in neither).
- ``groups``: Jaccard index of the kept-neuron sets (all masked positions; a neuron is kept
  when its keep probability > 0.5) of ``arm``'s trial, mean over same-true-group domain pairs
  minus mean over different-group pairs.

Verdict: ``held`` when mean - sd > 0, ``did not hold`` when mean + sd < 0, ``inconclusive``
when the spread straddles 0 or only one seed paired up, ``not measured`` when none did.

Shapes: S seeds, K domains, H neurons (all masked positions together).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from adasparse_lab.errors import ConfigError
from adasparse_lab.results.collect import ReportData, StudyInfo
from adasparse_lab.results.keep import jaccard, kept_neurons
from adasparse_lab.results.runs import read_artifact_tables

KINDS = ("better", "small_domains", "groups")
HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED = "held", "did not hold", "inconclusive", "not measured"


@dataclass(frozen=True)
class ClaimSpec:
    kind: str
    arm: str
    versus: tuple[str, ...]
    text: str
    source: str


@dataclass(frozen=True)
class ClaimPlan:
    arm_param: str
    seed_param: str
    claims: tuple[ClaimSpec, ...]


def parse_claims(raw: Mapping | None, arms: Collection[str]) -> ClaimPlan | None:
    """``study.claims`` as a plan (None when absent); every error names its key. ``arms``:
    the arms the space defines (all of them, not only those a reduced grid runs)."""
    if not raw:
        return None
    unknown = sorted(set(raw) - {"arm", "seed", "list"})
    if unknown:
        raise ConfigError(f"study.claims: unknown key(s) {unknown}; known: ['arm', 'list', 'seed']")
    claims = []
    for i, c in enumerate(raw.get("list") or []):
        key = f"study.claims.list[{i}]"
        extra = sorted(set(c) - {"kind", "arm", "versus", "text", "source"})
        if extra:
            raise ConfigError(f"{key}: unknown field(s) {extra}")
        if c.get("kind") not in KINDS:
            raise ConfigError(f"{key}.kind={c.get('kind')!r}; choose one of {list(KINDS)}")
        versus = tuple(c.get("versus") or ())
        if c["kind"] != "groups" and not versus:
            raise ConfigError(f"{key}.versus: kind {c['kind']} compares with at least one arm")
        if c["kind"] == "small_domains" and len(versus) != 1:
            raise ConfigError(f"{key}.versus: kind small_domains takes one arm, got {list(versus)}")
        for name, arm in [("arm", c.get("arm")), *(("versus", v) for v in versus)]:
            if arm not in arms:
                raise ConfigError(f"{key}.{name}={arm!r} is no arm of the space: {sorted(arms)}")
        claims.append(
            ClaimSpec(c["kind"], c["arm"], versus, str(c.get("text", "")), str(c.get("source", "")))
        )
    return ClaimPlan(str(raw.get("arm", "arm")), str(raw.get("seed", "seed")), tuple(claims))


def study_plan(study: Mapping) -> ClaimPlan | None:
    """The claims of a study config (``study``: its ``study`` node as a dict), their arm and
    seed parameters checked against its space (None: it declares none). The driver checks a
    config with it before training; the report reads a stored study's config with it."""
    raw = study.get("claims")
    if not raw:
        return None
    space = study.get("space") or {}
    for key in ("arm", "seed"):
        if raw.get(key, key) not in space:
            raise ConfigError(
                f"study.claims.{key}={raw.get(key, key)!r} is no parameter of study.space"
            )
    param = space[raw.get("arm", "arm")]
    return parse_claims(raw, set(param.get("overrides") or {}) | set(param.get("choices") or []))


@dataclass
class ClaimResult:
    spec: ClaimSpec
    per_seed: dict[int, float] = field(default_factory=dict)  # seed -> effect (> 0: held)
    note: str = ""

    @property
    def values(self) -> np.ndarray:
        return np.array([self.per_seed[s] for s in sorted(self.per_seed)], dtype=np.float64)

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if self.per_seed else math.nan

    @property
    def sd(self) -> float:
        return float(self.values.std(ddof=1)) if len(self.per_seed) > 1 else math.nan

    @property
    def verdict(self) -> str:
        return verdict(self.values)


def verdict(values: np.ndarray) -> str:
    """held / did not hold / inconclusive from per-seed effects (> 0 means the claim held)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NOT_MEASURED
    if values.size == 1:
        return INCONCLUSIVE
    mean, sd = values.mean(), values.std(ddof=1)
    if mean - sd > 0:
        return HELD
    if mean + sd < 0:
        return NOT_HELD
    return INCONCLUSIVE


def arm_trials(trials: pl.DataFrame, plan: ClaimPlan) -> pl.DataFrame:
    """COMPLETE trials with an arm and a test AUC: study, number, arm, seed, run_id, test_auc,
    flops_ratio, sparsity, method, val_auc. Where an (arm, seed) ran twice, the latest trial counts."""
    arm, seed = f"param:{plan.arm_param}", f"param:{plan.seed_param}"
    if arm not in trials.columns or seed not in trials.columns:
        return pl.DataFrame()
    return (
        trials.filter((pl.col("state") == "COMPLETE") & pl.col("test_auc").is_not_null())
        .with_columns(arm=pl.col(arm).cast(pl.String), seed=pl.col(seed).cast(pl.Int64))
        .sort("number")
        .unique(["study", "arm", "seed"], keep="last", maintain_order=True)
        .select(
            "study",
            "number",
            "arm",
            "seed",
            "run_id",
            "test_auc",
            "flops_ratio",
            "sparsity",
            "method",
            val_auc="auc",  # validation mean per-domain AUC: what picks a runner-up
        )
    )


def _by_seed(arms: pl.DataFrame, arm: str, column: str = "test_auc") -> dict[int, float]:
    part = arms.filter(pl.col("arm") == arm)
    return dict(zip(part["seed"].to_list(), part[column].to_list()))


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """a - b for every seed both have."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def _val_mean(arms: pl.DataFrame, arm: str, seeds: Collection[int]) -> float:
    """Mean validation AUC of ``arm`` over ``seeds`` (-inf without one: never the runner-up)."""
    val = _by_seed(arms, arm, "val_auc")
    found = [v for s, v in val.items() if s in seeds and v is not None and np.isfinite(v)]
    return float(np.mean(found)) if found else -np.inf


def _better(spec: ClaimSpec, arms: pl.DataFrame) -> ClaimResult:
    """The arm against its runner-up: the rival with the best validation AUC over the seeds
    both ran (chosen without looking at test), then measured on test, paired by seed."""
    mine = _by_seed(arms, spec.arm)
    ran = [v for v in spec.versus if set(_by_seed(arms, v)) & set(mine)]
    if not mine or not ran:
        return ClaimResult(spec, note="arm(s) not run")
    rival = max(ran, key=lambda v: _val_mean(arms, v, set(_by_seed(arms, v)) & set(mine)))
    note = f"runner-up: {rival}" if len(ran) > 1 else ""
    return ClaimResult(spec, paired(mine, _by_seed(arms, rival)), note)


def size_halves(domains: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(smaller half, larger half) of the domains with known train rows, by train rows."""
    known = domains.filter(pl.col("train_rows").is_not_null()).sort("train_rows", "domain")
    names = known["domain"].to_list()
    half = len(names) // 2
    return names[:half], names[len(names) - half :]


def _small_domains(
    spec: ClaimSpec, arms: pl.DataFrame, domain_metrics: pl.DataFrame, domains: pl.DataFrame
) -> ClaimResult:
    small, large = size_halves(domains)
    if not small:
        return ClaimResult(spec, note="fewer than two domains with known sizes")
    per_trial = domain_metrics.filter(pl.col("kind") == "trial").select(
        "number", "domain", "test_auc"
    )

    def domain_auc(arm: str) -> pl.DataFrame:  # seed, domain, test_auc of the arm's trials
        runs = arms.filter(pl.col("arm") == arm).select("seed", "number")
        return runs.join(per_trial, on="number").drop("number")

    gains = (
        domain_auc(spec.arm)
        .join(domain_auc(spec.versus[0]), on=["seed", "domain"], suffix="_versus")
        .select("seed", "domain", gain=pl.col("test_auc") - pl.col("test_auc_versus"))
        .drop_nulls("gain")
    )
    effects = {}
    for (seed,), part in gains.group_by("seed"):
        gain = dict(zip(part["domain"], part["gain"]))
        if all(d in gain for d in small + large):
            effects[seed] = float(
                np.mean([gain[d] for d in small]) - np.mean([gain[d] for d in large])
            )
    note = f"{len(small)} smallest vs {len(large)} largest domains"
    return ClaimResult(spec, effects, note if effects else "arm(s) not run")


def group_contrast(kept: np.ndarray, groups: list) -> float:
    """[K, H] kept flags and each domain's true group -> mean Jaccard of same-group pairs minus
    mean of different-group pairs (NaN without both kinds of pairs)."""
    sim = jaccard(kept)
    same, other = [], []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if groups[i] is not None and groups[j] is not None:
                (same if groups[i] == groups[j] else other).append(sim[i, j])
    return float(np.mean(same) - np.mean(other)) if same and other else math.nan


def _groups(
    spec: ClaimSpec, arms: pl.DataFrame, domains: pl.DataFrame, keep: Mapping[int, pl.DataFrame]
) -> ClaimResult:
    known = domains.filter(pl.col("group").is_not_null())
    if known["group"].n_unique() < 2:
        return ClaimResult(spec, note="no true domain groups in this data")
    names, groups = known["domain"].to_list(), known["group"].to_list()
    effects = {}
    for seed, number in arms.filter(pl.col("arm") == spec.arm).select("seed", "number").iter_rows():
        table = keep.get(number)
        if table is None or not table.height:
            continue
        value = group_contrast(kept_neurons(table, names), groups)
        if math.isfinite(value):
            effects[seed] = value
    return ClaimResult(spec, effects, "" if effects else "no keep probabilities stored")


def measure(
    plan: ClaimPlan,
    arms: pl.DataFrame,
    domain_metrics: pl.DataFrame,
    domains: pl.DataFrame,
    keep: Mapping[int, pl.DataFrame],
) -> list[ClaimResult]:
    """Every claim of ``plan`` on one study's tables (``arms``: arm_trials; ``keep``: trial
    number -> keep-probability table, for the ``groups`` claims)."""
    out = []
    for spec in plan.claims:
        if spec.kind == "better":
            out.append(_better(spec, arms))
        elif spec.kind == "small_domains":
            out.append(_small_domains(spec, arms, domain_metrics, domains))
        else:
            out.append(_groups(spec, arms, domains, keep))
    return out


def arm_summary(arms: pl.DataFrame) -> pl.DataFrame:
    """Per arm: method, seeds, test AUC mean and sd, FLOPs ratio and sparsity means."""
    return (
        arms.group_by("arm", maintain_order=True)
        .agg(
            method=pl.col("method").first(),
            seeds=pl.len(),
            test_auc=pl.col("test_auc").mean(),
            test_auc_sd=pl.col("test_auc").std(),
            flops_ratio=pl.col("flops_ratio").mean(),
            sparsity=pl.col("sparsity").mean(),
        )
        .sort("test_auc", descending=True)
    )


def study_claims(
    data: ReportData, info: StudyInfo
) -> tuple[list[ClaimResult], pl.DataFrame] | None:
    """The measured claims and the arms table (arm_summary) of one collected study, from the
    config it stored (None: it declares no claims)."""
    config = OmegaConf.to_container(OmegaConf.create(info.attrs.get("config") or "{}"))
    plan = study_plan(config.get("study") or {})
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
