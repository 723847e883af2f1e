"""Peer: our DNN, DCNv2 (stacked) and MMoE against FuxiCTR's, on the same prepared rows, in one
run (``python -m adasparse_lab.bench --only peer``; FuxiCTR: ``pip install .[peer]``).

Both sides read one ``PreparedData`` (the project's preparation of a conf/data config: the same
train / val / test split, vocabularies and integer codes; bench/peer_protocol.py hands it to
FuxiCTR as its batch dicts). Ours: each model's conf/model file with ``pruner=none``, trained
by ``run.pipeline.train_and_evaluate`` (run/fit.py, the defaults of conf/train), so the numbers
are what a user gets. Theirs: FuxiCTR's layers of the same sizes trained by FuxiCTR's BaseModel
recipe (bench/peer_fuxictr.py). Runs interleave: for each seed, each model, ours then theirs.
Both score the same test rows with adasparse_lab.metrics (overall AUC and unweighted mean
per-domain AUC); samples/s is training rows over the seconds of training epochs (validation
excluded) on the CPU with the same torch thread count.

Without FuxiCTR the section says why it is skipped and prepares nothing.
"""

from __future__ import annotations

import importlib
import logging
import math
import statistics
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.bench.peer_protocol import PeerProtocol, SideRun
from adasparse_lab.bench.workload import CONF, FIXTURES, data_overrides, head
from adasparse_lab.data.build import build_data
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.results.verdicts import paired
from adasparse_lab.run.pipeline import train_and_evaluate

log = logging.getLogger(__name__)
INSTALL = "pip install .[peer]  (fuxictr==2.3.10)"

# (name, our conf overrides): FuxiCTR builds the same name from the composed model config.
PEER_MODELS = (
    ("dnn", ["model=mlp", "pruner=none"]),
    ("dcnv2", ["model=dcnv2", "model.structure=stacked", "pruner=none"]),
    ("mmoe", ["model=mmoe", "pruner=none"]),
)
SIDES = ("ours", "fuxictr")


@dataclass(frozen=True)
class PeerBenchConfig:
    data: str = "synthetic"  # a conf/data name
    data_root: Path = FIXTURES  # paths.data of a real data config
    rows: int | None = 100_000  # synthetic: rows generated; other data: first train rows kept
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ()  # empty: every PEER_MODELS entry
    threads: int = 2
    protocol: PeerProtocol = field(default_factory=PeerProtocol)


@dataclass
class PeerResult:
    config: PeerBenchConfig
    version: str  # FuxiCTR's
    data_shape: dict  # rows per split, domains, fields
    runs: list[SideRun] = field(default_factory=list)
    architectures: dict[str, dict] = field(default_factory=dict)  # our model config per model

    def of(self, model: str, side: str) -> list[SideRun]:
        return [r for r in self.runs if r.model == model and r.side == side]


def missing_peer() -> str | None:
    """Why FuxiCTR's side cannot run (None: it can)."""
    try:
        importlib.import_module("adasparse_lab.bench.peer_fuxictr")
    except ImportError as err:
        return f"FuxiCTR is not importable ({err})"
    return None


def chosen_models(only: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    return [(n, o) for n, o in PEER_MODELS if not only or n in only]


def _compose(cfg: PeerBenchConfig, extra: list[str]) -> DictConfig:
    data = data_overrides(cfg.data, cfg.rows, cfg.data_root)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["tracking=none", *data, *extra])


def prepare_peer_data(cfg: PeerBenchConfig) -> PreparedData:
    """The project's preparation of ``cfg.data`` (in memory, no cache), train rows capped."""
    data = build_data(_compose(cfg, []).data, cache_dir=None)
    if cfg.data != "synthetic" and cfg.rows and cfg.rows < len(data.splits["train"]):
        data = replace(data, splits=data.splits | {"train": head(data.splits["train"], cfg.rows)})
    return data


def data_shape(data: PreparedData) -> dict:
    return {
        "rows": {name: len(s) for name, s in data.splits.items()},
        "domains": data.n_domains,
        "categorical": len(data.vocab_sizes),
        "dense": len(data.schema.dense),
    }


def model_config(cfg: PeerBenchConfig, overrides: list[str], seed: int) -> DictConfig:
    """Our run's config: conf defaults, the model's overrides and the protocol's numbers."""
    p = cfg.protocol
    return _compose(cfg, [
        *overrides, f"seed={seed}", f"train.epochs={p.epochs}", f"train.batch_size={p.batch_size}",
        f"train.lr={p.lr}", f"train.eval_batch_size={p.eval_batch_size}", "train.device=cpu",
        "train.progress=false", "latency.enabled=false",
    ])  # fmt: skip


def run_ours(name: str, run_cfg: DictConfig, data: PreparedData, seed: int) -> SideRun:
    result = train_and_evaluate(run_cfg, data=data)
    history = result.fit.history
    seconds = sum(len(data.splits["train"]) / r.samples_per_s for r in history)
    return SideRun(  # test numbers as train_and_evaluate scored them (adasparse_lab.metrics)
        model=name,
        side="ours",
        seed=seed,
        test_auc=result.metrics["test/auc"],
        test_mean_domain_auc=result.metrics["test/mean_domain_auc"],
        best_epoch=result.fit.best_epoch,
        epochs_run=len(history),
        samples_per_s=len(history) * len(data.splits["train"]) / seconds,
        fit_seconds=result.fit.seconds,
        params=int(result.metrics["params"]),
    )


def run_peer_bench(cfg: PeerBenchConfig) -> PeerResult:
    """Every chosen model, every seed, both sides interleaved (ours then theirs), each run's
    line printed as it ends. Needs FuxiCTR (``missing_peer() is None``)."""
    from adasparse_lab.bench import peer_fuxictr  # FuxiCTR is an optional extra

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data = prepare_peer_data(cfg)
        result = PeerResult(cfg, peer_fuxictr.VERSION, data_shape(data))
        with tempfile.TemporaryDirectory() as workdir:
            for seed in cfg.seeds:
                for name, overrides in chosen_models(cfg.models):
                    run_cfg = model_config(cfg, overrides, seed)
                    result.architectures[name] = sizes(run_cfg.model)
                    result.runs.append(run_ours(name, run_cfg, data, seed))
                    print(format_run(result.runs[-1]), flush=True)
                    theirs = peer_fuxictr.run_fuxictr(
                        name, run_cfg.model, data, cfg.protocol, seed, workdir
                    )
                    result.runs.append(theirs)
                    print(format_run(theirs), flush=True)
    finally:
        torch.set_num_threads(threads)
    return result


def sizes(model_cfg: DictConfig) -> dict:
    """The sizes of a model config (its numbers and lists; no target, name or kernel)."""
    skip = ("_target_", "name", "kernel")
    return {k: v for k, v in OmegaConf.to_container(model_cfg).items() if k not in skip}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{statistics.fmean(values):.4f} ± " + ("  -   " if math.isnan(sd) else f"{sd:.4f}")


def format_run(r: SideRun) -> str:
    return (
        f"    seed {r.seed} {r.model:<6} {r.side:<8}: test AUC {r.test_auc:.4f}, mean domain AUC "
        f"{r.test_mean_domain_auc:.4f}, best epoch {r.best_epoch} of {r.epochs_run}, "
        f"{r.samples_per_s:,.0f} samples/s, fit {r.fit_seconds:.1f} s"
    )


def _header(res: PeerResult) -> list[str]:
    c, p, s = res.config, res.config.protocol, res.data_shape
    rows = " / ".join(f"{k} {v:,}" for k, v in s["rows"].items())
    return [
        f"[13] peer  ours vs FuxiCTR {res.version} on the same prepared rows: data={c.data} "
        f"({rows} rows; {s['domains']} domains; {s['categorical']} categorical + "
        f"{s['dense']} dense fields)",
        *(f"    {name}: {arch}" for name, arch in res.architectures.items()),
        f"    batch {p.batch_size}, Adam lr {p.lr:g}, up to {p.epochs} epochs "
        f"(best validation epoch kept), seeds {' '.join(map(str, c.seeds))} interleaved, "
        f"{c.threads} torch threads, CPU; FuxiCTR fed by "
        + ("its NpzDataLoader (timed)" if p.fuxictr_loader == "npz" else "our tensors (no loader)"),
        f"    {'model':<7}{'side':<9}{'test AUC':>17}{'mean domain AUC':>19}{'best epochs':>13}"
        f"{'samples/s':>11}{'params':>11}",
    ]


def format_peer(res: PeerResult) -> str:
    """The table: per model and side, mean ± sd over seeds; then ours - theirs per model."""
    lines = _header(res)
    for name, _ in chosen_models(res.config.models):
        for side in SIDES:
            runs = res.of(name, side)
            if not runs:
                continue
            lines.append(
                f"    {name:<7}{side:<9}{mean_sd([r.test_auc for r in runs]):>17}"
                f"{mean_sd([r.test_mean_domain_auc for r in runs]):>19}"
                f"{' '.join(str(r.best_epoch) for r in runs):>13}"
                f"{statistics.median(r.samples_per_s for r in runs):>11,.0f}{runs[0].params:>11,}"
            )
        ours, theirs = res.of(name, "ours"), res.of(name, "fuxictr")
        if ours and theirs:
            diff = [a.test_auc - b.test_auc for a, b in zip(ours, theirs)]
            d = paired("ours", {r.seed: r.test_auc for r in ours}, "fuxictr",
                       {r.seed: r.test_auc for r in theirs})  # fmt: skip
            speed = statistics.median(
                a.samples_per_s / b.samples_per_s for a, b in zip(ours, theirs)
            )
            lines.append(
                f"    {'':<7}ours - FuxiCTR: test AUC {d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}] "
                f"(per seed {' '.join(f'{x:+.4f}' for x in diff)}); samples/s {speed:.2f}x"
            )
    lines.append(
        "    sd over seeds (sample); [ ]: 95% t-interval of the paired difference over seeds "
        "(holding 0: noise); best epochs per seed; samples/s: median over seeds; params: "
        "trained parameters with the embedding tables"
    )
    return "\n".join(lines)


def format_skipped(reason: str) -> str:
    return f"[13] peer  skipped: {reason}; install the peer extra: {INSTALL}"


def as_json(res: PeerResult) -> dict:
    cfg = asdict(res.config) | {"data_root": str(res.config.data_root)}
    return {
        "config": cfg,
        "fuxictr_version": res.version,
        "data": res.data_shape,
        "architectures": res.architectures,
        "runs": [asdict(r) for r in res.runs],
    }
