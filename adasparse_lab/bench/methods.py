"""Every method's training step and serving cost, each against the dense model in the same run.

A method is a name and Hydra overrides of conf/ (``METHODS``: adding a method is one line).
Each is built from the real configs (conf/config.yaml: embedding D=16, MLP [256, 128, 64]) on the
benchmark's synthetic rows (12 domains).
- Training: ``trainer.fit`` for one epoch over ``rows`` rows, batch 1024, with the method's
  pruner, regulariser and target schedule; samples/s of the train epoch (the val pass is
  excluded). Methods run interleaved, a fresh seeded model per pass, one untimed warm-up round
  first; the table gives the best pass and the time per sample relative to ``dense``.
- Serving: the model of the last pass (static structures have reached their target by then:
  the band centre at the end of training) through ``adasparse_lab.run.latency``: every domain served
  by its compacted net where the structure is static, the masked model otherwise, on real test
  rows at batch 4096 and 1, the dense model timed in the same rounds. Printed beside it: the
  analytic FLOPs ratio on the test split, and ``speedup / (1 / FLOPs ratio)`` = FLOPs ratio /
  latency ratio at batch 4096 (1.0: the kernel delivers all the saving the FLOPs promise;
  ADASPARSE.md asks >= 0.8 for compacted networks).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from adasparse_lab.bench.serving import analytic_flops_ratio
from adasparse_lab.bench.workload import synthetic_data, with_train_rows
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.run.evaluation import evaluate
from adasparse_lab.run.fit import fit
from adasparse_lab.run.latency import LatencySettings, measure_latency, static_network, time_rounds

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[2] / "conf"
TARGET = ["schedule.r_min=0.35", "schedule.r_max=0.45"]  # static nets at FLOPs ratio ~0.5
METHODS: list[tuple[str, list[str]]] = [
    ("dense", ["pruner=none"]),  # the baseline: keep it first
    ("adasparse-fusion", ["pruner=fusion"]),
    ("adasparse-fusion-domain", ["pruner=fusion", "pruner.inputs=domain", *TARGET]),
    ("adasparse-fusion-r16", ["pruner=fusion", "pruner.rank=16", "pruner.mask_input=true"]),
    ("magnitude", ["pruner=magnitude", "schedule=agp", *TARGET]),
    ("domain_magnitude", ["pruner=domain_magnitude", "schedule=agp", *TARGET]),
    ("random", ["pruner=random", "schedule=agp", *TARGET]),
]


@dataclass(frozen=True)
class MethodsBenchConfig:
    rows: int = 65_536  # training rows per timed pass
    repeats: int = 3  # timed passes per method (after one warm-up round)
    serve_repeats: int = 3  # latency.repeats
    serve_batch_sizes: tuple[int, ...] = (4096, 1)  # the largest gives val/latency/ratio
    only: tuple[str, ...] = ()  # method names to run (dense always runs); empty: all
    seed: int = 0


@dataclass
class MethodResult:
    name: str
    overrides: list[str]
    samples_per_s: list[float] = field(default_factory=list)
    flops_ratio: float = float("nan")  # analytic, test split, relative to dense
    sparsity: float = float("nan")  # mean over domains and masked positions
    latency: dict[str, float] = field(default_factory=dict)  # latency.py metrics
    served: str = ""  # 'compact' or 'masked' (the network serving the domains)
    tower: tuple[float, float] | None = None  # compacted towers alone: (FLOPs, time) ratios

    @property
    def best(self) -> float:
        return max(self.samples_per_s)

    @property
    def efficiency(self) -> float:
        """speedup / (1 / FLOPs ratio) at batch 4096 = FLOPs ratio / latency ratio."""
        return self.flops_ratio / self.latency["val/latency/ratio"]

    @property
    def tower_efficiency(self) -> float:
        """The same for the towers alone (embedding excluded, as in the analytic count)."""
        return float("nan") if self.tower is None else self.tower[0] / self.tower[1]


@dataclass
class MethodsBenchResult:
    config: MethodsBenchConfig
    methods: list[MethodResult]

    def train_ratio(self, m: MethodResult) -> float:
        """Training time per sample relative to dense (best passes)."""
        return self.methods[0].best / m.best

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Per method, every ratio to dense of this run (None where it does not apply)."""
        return {
            m.name: {
                "train_time_vs_dense": self.train_ratio(m),
                "flops_ratio": m.flops_ratio,
                "latency_ratio": m.latency["val/latency/ratio"],  # at the largest batch
                **{
                    k.removeprefix("val/latency/"): v
                    for k, v in m.latency.items()
                    if "ratio_b" in k
                },
                "speedup_over_flops_promise": m.efficiency,
                "tower_speedup_over_flops_promise": m.tower_efficiency if m.tower else None,
            }
            for m in self.methods
        }


def chosen_methods(only: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    known = [name for name, _ in METHODS]
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {known}")
    return [(n, o) for n, o in METHODS if not only or n in only or n == "dense"]


def method_config(overrides: list[str], seed: int) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, "tracking=none", f"seed={seed}"])


def train_pass(cfg: DictConfig, data: PreparedData) -> tuple[torch.nn.Module, float]:
    """One epoch of ``fit`` from a fresh seeded model; returns the model and samples/s."""
    parts = build_components(cfg)
    settings = replace(parts.settings, epochs=1, device="cpu", progress=False)
    torch.manual_seed(settings.seed)
    model = build_model(cfg.model, data, parts.pruner)
    result = fit(model, data, settings, parts.regularizer, parts.schedule)
    return model, result.history[0].samples_per_s


def serve(
    m: MethodResult, model, dense_cfg: DictConfig, data: PreparedData, cfg: MethodsBenchConfig
) -> None:
    """Fill the serving numbers of ``m`` from its trained ``model``."""
    test = evaluate(model, data, "test", 8192, torch.device("cpu"))
    m.flops_ratio = float(test.flops.ratio)
    m.sparsity = float(np.nanmean(test.sparsity.ratio)) if test.sparsity.positions else 0.0
    settings = LatencySettings(
        batch_sizes=cfg.serve_batch_sizes, repeats=cfg.serve_repeats, budget_s=math.inf
    )  # the benchmark times every round, whatever the load
    dense = lambda: build_model(dense_cfg.model, data, None)  # noqa: E731
    result = measure_latency(model, dense, data, settings)
    m.latency = result.as_dict()
    m.served = "compact" if "compact" in result.served.values() else "masked"
    if m.served == "compact":
        b = max(cfg.serve_batch_sizes)
        m.tower = tower_ratios(model, dense(), data, cfg.serve_repeats, b)


def _dense_tower(model):
    """The dense model's tower as a function of h0 [B, H_0] -> logits [B]."""

    def tower(h: torch.Tensor) -> torch.Tensor:
        for layer in model.layers:
            h = torch.relu(layer(h))
        return model.head(h).squeeze(-1)

    return tower


@torch.inference_mode()
def tower_ratios(model, dense, data: PreparedData, repeats: int, b: int = 4096):
    """(FLOPs ratio, time ratio) of the compacted towers at batch ``b`` on each domain's
    embedded test rows, sample-weighted over domains like val/latency/ratio: FLOPs over the
    reference MLP (models/base.py, the denominator of val/flops/ratio), time over the dense
    model's tower (one MLP where the dense model's hidden dims are ``flops_reference``, both
    [256, 128, 64] by default). The embedding is left out, as the analytic FLOPs leave it out."""
    split = data.splits["test"]
    nets, inputs, weights, flops = {"dense": _dense_tower(dense.eval())}, {}, {}, {}
    for k, name in enumerate(data.domain_names):
        rows = torch.nonzero(split.domain == k).flatten()
        compact = static_network(model, k)
        if rows.numel() == 0 or compact is None:
            continue
        idx = rows[torch.arange(b) % rows.numel()]
        inputs[name] = [(model.embedding(split.cat[idx], split.dense[idx])[1], None)]
        nets[name] = lambda h, _, tower=compact.tower: tower(h)
        weights[name], flops[name] = int(rows.numel()), analytic_flops_ratio(model, compact)
    every = torch.arange(b) % len(split)
    inputs["dense"] = [(dense.embedding(split.cat[every], split.dense[every])[1], None)]
    nets["dense"] = lambda h, _, tower=nets["dense"]: tower(h)
    ms = time_rounds(
        nets, inputs, LatencySettings(repeats=repeats, budget_s=math.inf), torch.device("cpu")
    )
    total = sum(weights.values())
    flops_ratio = sum(weights[n] * flops[n] for n in weights) / total
    time_ratio = sum(weights[n] * ms[n] for n in weights) / total / ms["dense"]
    return flops_ratio, time_ratio


def run_methods_bench(cfg: MethodsBenchConfig) -> MethodsBenchResult:
    data = with_train_rows(synthetic_data(cfg.rows, cfg.seed), cfg.rows)
    chosen = chosen_methods(cfg.only)
    configs = {name: method_config(o, cfg.seed) for name, o in chosen}
    results = [MethodResult(name, o) for name, o in chosen]
    models = {}
    for r in range(1 + cfg.repeats):
        for m in results:
            models[m.name], sps = train_pass(configs[m.name], data)
            if r:
                m.samples_per_s.append(sps)
            log.info("methods: pass %d %s %.0f samples/s", r, m.name, sps)
    for m in results:
        serve(m, models[m.name], configs["dense"], data, cfg)
    return MethodsBenchResult(cfg, results)


def format_methods(res: MethodsBenchResult, threads: int) -> str:
    """The methods block of the printed table: every number relative to dense in this run."""
    c, dense = res.config, res.methods[0]
    b, small = max(c.serve_batch_sizes), min(c.serve_batch_sizes)
    lines = [
        f"[5] methods  each against the dense model in this run ({threads} torch threads); "
        f"fit() 1 epoch of {c.rows:,} rows, batch 1024, best of {c.repeats} interleaved passes",
        "    serving: latency.py on the trained model, 12 domains' test rows, compacted net where "
        f"static, masked model otherwise; dense at batch {b}: "
        f"{dense.latency[f'val/latency/dense_b{b}']:.3f} ms / 1k samples",
        f"    {'method':<26}{'train/s':>9}{'train time':>11}{'FLOPs':>7}{'latency':>9}{'latency':>9}"
        f"{'served':>9}{'speedup /':>11}{'towers':>8}",
        f"    {'':<26}{'(best)':>9}{'vs dense':>11}{'ratio':>7}{f'b{b}':>9}{f'b{small}':>9}{'':>9}"
        f"{'(1/FLOPs)':>11}{'only':>8}",
    ]
    for m in res.methods:
        lines.append(
            f"    {m.name:<26}{m.best:>9,.0f}{res.train_ratio(m):>10.2f}x{m.flops_ratio:>7.3f}"
            f"{m.latency['val/latency/ratio']:>9.3f}{m.latency[f'val/latency/ratio_b{small}']:>9.3f}"
            f"{m.served:>9}{m.efficiency:>11.2f}"
            + (f"{m.tower_efficiency:>8.2f}" if m.tower else f"{'-':>8}")
        )
    lines.append(
        "    latency = served time / dense time (sample-weighted over domains); speedup / "
        "(1/FLOPs) >= 0.8 is the target for compacted nets;\n    towers only: the same for the "
        "compacted towers on embedded rows (the embedding, not in the FLOPs count, left out)"
    )
    return "\n".join(lines)
