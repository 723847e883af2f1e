"""Which training-recipe choices cost test AUC: each one alone against the shipped recipe, and
all of them together, on the same prepared data and seeds
(``python -m adasparse_lab.bench --only recipe``).

The choices are those where our recipe differed from FuxiCTR's (issue 23): the embedding's
initial scale (``model.init.embedding_std``), xavier_normal linear layers
(``model.init.linear``), gradient clipping (``train.grad_clip_norm``) and the validation metric
that picks the best epoch (``train.select_on``). Each variant is a list of config overrides,
so what the table measures is what a run with those overrides gets. Protocol (the issue's):
embedding 16, MLP [256, 128, 64], batch 1024, Adam 1e-3, 5 epochs with the best validation
epoch kept (patience = epochs, no early stop), seeds 0..n-1, the variants interleaved per
seed. Each row gives test AUC (overall and mean per domain) over the seeds, and the paired
difference against the shipped recipe with its 95% t-interval (results/verdicts.py).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

from hydra import compose, initialize_config_dir

from adasparse_lab.bench.workload import CONF, data_overrides
from adasparse_lab.data.build import build_data
from adasparse_lab.results.verdicts import estimate, paired
from adasparse_lab.run.pipeline import train_and_evaluate

# (name, overrides): "before" is the recipe before issue 23, each other one changes one choice
# (or all of them: FuxiCTR's recipe).
BEFORE = [
    "model.init.embedding_std=0.05",
    "model.init.linear=torch",
    "train.grad_clip_norm=null",
    "train.select_on=mean_domain_auc",
]
CHANGES = {
    "emb 1e-4": "model.init.embedding_std=1e-4",
    "emb 1e-2": "model.init.embedding_std=1e-2",
    "xavier": "model.init.linear=xavier_normal",
    "clip 10": "train.grad_clip_norm=10",
    "select auc": "train.select_on=auc",
}
VARIANTS: dict[str, list[str]] = {
    "before": BEFORE,
    **{name: [*BEFORE, change] for name, change in CHANGES.items()},
    "all (FuxiCTR)": [*BEFORE, *(c for n, c in CHANGES.items() if n != "emb 1e-2")],
    "xavier+emb 1e-2": [*BEFORE, CHANGES["xavier"], CHANGES["emb 1e-2"]],
    "shipped": [],  # the defaults of conf/ as they are now
}
MODELS = {
    "dnn": ["model=mlp", "pruner=none"],
    "dcnv2": ["model=dcnv2", "model.structure=stacked", "pruner=none"],
    "mmoe": ["model=mmoe", "pruner=none"],
}


@dataclass
class RecipeBenchConfig:
    data: str = "synthetic"
    rows: int = 100_000  # synthetic rows (split 80/10/10); ignored by the real data configs
    epochs: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = tuple(MODELS)
    variants: tuple[str, ...] = tuple(VARIANTS)


@dataclass
class RecipeRun:
    model: str
    variant: str
    seed: int
    test_auc: float
    test_mean_domain_auc: float
    best_epoch: int
    samples_per_s: float  # training throughput of the fit's epochs (median)


@dataclass
class RecipeBenchResult:
    config: RecipeBenchConfig
    runs: list[RecipeRun] = field(default_factory=list)
    seconds: float = 0.0

    def values(self, model: str, variant: str, metric: str) -> dict[int, float]:
        return {
            r.seed: getattr(r, metric)
            for r in self.runs
            if r.model == model and r.variant == variant
        }

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), "runs": [asdict(r) for r in self.runs]}


def check(cfg: RecipeBenchConfig) -> None:
    """Unknown model or variant names fail before anything is trained."""
    for kind, given, known in (
        ("--recipe-models", cfg.models, MODELS),
        ("--recipe-variants", cfg.variants, VARIANTS),
    ):
        bad = [g for g in given if g not in known]
        if bad:
            raise ValueError(f"{kind}: unknown {bad}; choose from {list(known)}")


def overrides(cfg: RecipeBenchConfig, tmp: str) -> list[str]:
    out = [
        "tracking=none", "latency.enabled=false", "train.progress=false",
        f"train.epochs={cfg.epochs}", f"train.patience={cfg.epochs}",
        f"paths.studies={tmp}/studies", f"paths.cache={tmp}/cache",
    ]  # fmt: skip
    return out + data_overrides(cfg.data, cfg.rows)


def run_recipe_bench(cfg: RecipeBenchConfig, log=print) -> RecipeBenchResult:
    check(cfg)
    result, started = RecipeBenchResult(cfg), time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
    ):
        base = overrides(cfg, tmp)
        data = build_data(compose("config", overrides=base).data, f"{tmp}/cache")
        for seed in cfg.seeds:
            for model in cfg.models:
                for variant in cfg.variants:
                    run_cfg = compose(
                        "config",
                        overrides=[*base, *MODELS[model], *VARIANTS[variant], f"seed={seed}"],
                    )
                    out = train_and_evaluate(run_cfg, data)
                    speeds = sorted(e.samples_per_s for e in out.fit.history)
                    run = RecipeRun(
                        model,
                        variant,
                        seed,
                        out.metrics["test/auc"],
                        out.metrics["test/mean_domain_auc"],
                        int(out.metrics["best_epoch"]),
                        speeds[len(speeds) // 2],
                    )
                    result.runs.append(run)
                    log(
                        f"  seed {seed} {model:<6} {variant:<14} test AUC {run.test_auc:.4f} "
                        f"(domains {run.test_mean_domain_auc:.4f}), best epoch {run.best_epoch}"
                    )
    result.seconds = time.perf_counter() - started
    return result


def format_recipe(res: RecipeBenchResult, threads: int) -> str:
    c = res.config
    rows = f"{c.rows:,} synthetic rows" if c.data == "synthetic" else f"data={c.data} (fixture)"
    lines = [
        f"[recipe] training recipe ablation ({threads} torch threads): {rows}, {c.epochs} epochs "
        f"(best validation epoch kept), seeds {list(c.seeds)}, {res.seconds:.0f} s",
        f"    {'model':<7}{'variant':<15}{'test AUC':>18}{'vs before (95% CI)':>30}"
        f"{'domain AUC':>18}{'best epochs':>14}{'samples/s':>11}",
    ]
    for model in c.models:
        before = res.values(model, "before", "test_auc")
        for variant in c.variants:
            auc = res.values(model, variant, "test_auc")
            if not auc:
                continue
            e = estimate(list(auc.values()))
            dom = estimate(list(res.values(model, variant, "test_mean_domain_auc").values()))
            sd = statistics.stdev(auc.values()) if len(auc) > 1 else float("nan")
            diff = ""
            if variant != "before" and before:
                d = paired(variant, auc, "before", before)
                diff = f"{d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
            epochs = ",".join(str(v) for v in res.values(model, variant, "best_epoch").values())
            speed = max(res.values(model, variant, "samples_per_s").values())
            lines.append(
                f"    {model:<7}{variant:<15}{e.mean:>11.4f} ± {sd:.4f}{diff:>30}"
                f"{dom.mean:>18.4f}{epochs:>14}{speed:>11,.0f}"
            )
    lines.append(
        "    ± : sd over seeds; vs before: mean paired difference of test AUC over the seeds "
        "and its 95% t-interval (an interval holding 0 is noise)"
    )
    return "\n".join(lines)
