"""``python -m adasparse_lab.bench``: run the benchmark sections and print one table.

python -m adasparse_lab.bench                       # all sections, defaults (~1-3 min, 2 cores)
python -m adasparse_lab.bench --only train --repeats 7 --threads 1
python -m adasparse_lab.bench --only prep          # 85M rows: prep, mmap vs RAM, 4 readers (all sections: 1M)
python -m adasparse_lab.bench --only prep --prep-rows 2000000 --prep-train-rows 1000000
python -m adasparse_lab.bench --only study          # per-trial overhead of the study driver
python -m adasparse_lab.bench --only methods        # every method's training and serving vs dense
python -m adasparse_lab.bench --only methods --method magnitude --method random
python -m adasparse_lab.bench --only models         # every zoo model: fit() vs a bare loop
python -m adasparse_lab.bench --only step --threads 2   # AdaSparse kernel fast vs reference
python -m adasparse_lab.bench --only scale           # trials/hour by workers, PostgreSQL vs journal
python -m adasparse_lab.bench --only export --threads 1   # exported bundle latency per domain
python -m adasparse_lab.bench --only gpu           # CUDA vs CPU training, bf16 vs fp32 AUC, GPU serving
python -m adasparse_lab.bench --only domains         # 100 and 1,000 domains: report, browser, overhead (main-study trials;
                                                     # --domains-baseline: also every per-domain value as an MLflow metric)
python -m adasparse_lab.bench --only search          # main study plain vs early stopping, 3 seeds
                                                     # (--search-jobs 2: two seeds at once, a process each)
python -m adasparse_lab.bench --only layout          # 1 worker x 2 threads vs 2 workers x 1 thread
python -m adasparse_lab.bench --only compile --threads 1  # train.compile: torch.compile vs eager
python -m adasparse_lab.bench --only recipe          # training-recipe ablation: test AUC, 3 seeds
python -m adasparse_lab.bench --only recipe --recipe-data douban --recipe-models dnn
python -m adasparse_lab.bench --only peer           # our DNN, DCNv2, MMoE vs FuxiCTR's (pip install .[peer])
python -m adasparse_lab.bench --only peer --peer-data douban --peer-seeds 0 1 --peer-epochs 3
python -m adasparse_lab.bench --json bench.json     # also write the numbers
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from adasparse_lab.bench import recipe
from adasparse_lab.bench.compile import format_compile, run_compile_bench
from adasparse_lab.bench.domains import ALL_AS_METRICS, format_domains, run_domains_bench
from adasparse_lab.bench.export import ExportBenchConfig, format_export, run_export_bench
from adasparse_lab.bench.gpu import (
    GpuBenchConfig,
    NoCudaError,
    format_gpu,
    require_cuda,
    run_gpu_bench,
)
from adasparse_lab.bench.methods import (
    METHODS,
    MethodsBenchConfig,
    format_methods,
    run_methods_bench,
)
from adasparse_lab.bench.models import MODELS, format_models, run_models_bench
from adasparse_lab.bench.peer import (
    PEER_MODELS,
    PeerBenchConfig,
    format_peer,
    format_skipped,
    missing_peer,
    run_peer_bench,
)
from adasparse_lab.bench.peer import as_json as peer_json
from adasparse_lab.bench.peer_protocol import FUXICTR_LOADERS, PeerProtocol
from adasparse_lab.bench.preparation import run_prep_bench
from adasparse_lab.bench.report import (
    describe_machine,
    format_load,
    format_machine,
    format_prep,
    format_serve,
    format_train,
    load_average,
    to_json,
)
from adasparse_lab.bench.scale import (
    format_layout,
    format_scale,
    run_layout_bench,
    run_scale_bench,
)
from adasparse_lab.bench.search import as_json, format_search, run_search_bench
from adasparse_lab.bench.serving import ServeBenchConfig, run_serve_bench
from adasparse_lab.bench.step import StepBenchConfig, format_step, run_step_bench, step_ratios
from adasparse_lab.bench.study_overhead import format_study, run_study_bench
from adasparse_lab.bench.throughput import TrainBenchConfig, run_train_bench

SECTIONS = (
    "train", "serve", "prep", "study", "methods", "step", "scale", "export", "models", "gpu",
    "domains", "search", "layout", "recipe", "peer", "compile",
)  # fmt: skip


def positive_int(text: str) -> int:
    """argparse type of a count: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _count_flag(p: argparse.ArgumentParser, flag: str, default, help: str | None = None) -> None:
    """A flag whose value is a count (an int >= 1)."""
    p.add_argument(flag, type=positive_int, default=default, help=help)


def _add_general_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); default: all but scale, models, gpu, domains, search, layout, recipe, peer and compile",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )


def _add_train_serve_flags(p: argparse.ArgumentParser) -> None:
    t, s = TrainBenchConfig(), ServeBenchConfig()
    _count_flag(p, "--rows", t.rows, "rows per timed fit / bare pass")
    _count_flag(p, "--loader-rows", t.loader_rows, "rows per timed DataLoader pass")
    _count_flag(p, "--warmup-rows", t.warmup_rows)
    _count_flag(p, "--repeats", t.repeats, "interleaved repeats of each variant")
    p.add_argument("--serve-batch-sizes", type=int, nargs="+", default=list(s.batch_sizes))
    p.add_argument(
        "--serve-prune",
        type=float,
        default=s.prune_fraction,
        help="fraction of each hidden layer pruned for the served domain",
    )
    p.add_argument(
        "--serve-seconds", type=float, default=s.seconds, help="time budget per batch size"
    )


def _add_prep_study_flags(p: argparse.ArgumentParser) -> None:
    _count_flag(
        p,
        "--prep-rows",
        default=None,
        help="rows for the preparation timing (default 85M with --only prep alone, else 1M)",
    )
    _count_flag(
        p,
        "--prep-train-rows",
        default=None,
        help="training rows of the memory vs memory-mapped samples/s comparison (default 5M with --only prep alone, else 500k)",
    )
    p.add_argument(
        "--prep-workers", type=int, default=4, help="workers reading the prepared store at once"
    )
    p.add_argument(
        "--study", default="sparsity", help="study whose trials the overhead is measured on"
    )
    p.add_argument("--study-trials", type=int, default=4, help="trials of the overhead section")


def _add_only_flag(p: argparse.ArgumentParser, flag: str, named: Sequence, help: str) -> None:
    """A repeatable ``flag`` that picks entries of ``named`` ((name, ...) pairs) by name."""
    p.add_argument(flag, action="append", choices=[name for name, _ in named], help=help)


def _add_method_model_flags(p: argparse.ArgumentParser) -> None:
    m = MethodsBenchConfig()
    _add_only_flag(
        p,
        "--method",
        METHODS,
        "methods section: run only this method (repeatable; dense always runs)",
    )
    _count_flag(p, "--method-rows", m.rows, "training rows per pass")
    _count_flag(p, "--method-repeats", m.repeats)
    p.add_argument(
        "--method-batch-sizes",
        type=int,
        nargs="+",
        default=list(m.serve_batch_sizes),
        help="serving batch sizes of the methods section (the largest gives the latency ratio)",
    )
    _add_only_flag(p, "--model", MODELS, "models section: run only this model (repeatable)")
    _count_flag(p, "--model-rows", 65536, "models section: rows per pass")
    _count_flag(p, "--model-repeats", 3)


def _add_step_scale_export_flags(p: argparse.ArgumentParser) -> None:
    e = ExportBenchConfig()
    _count_flag(p, "--step-rows", StepBenchConfig().rows, "rows per timed step pass")
    p.add_argument("--scale-trials", type=int, default=8, help="scale section: trials per point")
    p.add_argument(
        "--scale-workers", type=int, nargs="+", default=[1, 2, 4], help="scale section: workers"
    )
    p.add_argument("--export-batch-size", type=int, default=e.batch_size, help="rows per call")
    p.add_argument("--export-seconds", type=float, default=e.seconds, help="time budget per domain")
    g = GpuBenchConfig()
    _count_flag(p, "--gpu-rows", g.rows, "gpu section: training rows")
    _count_flag(p, "--gpu-epochs", g.auc_epochs, "gpu section: epochs of the fp32 and bf16 runs")
    p.add_argument(
        "--domain-counts", type=int, nargs="+", default=[100, 1000], help="domains section"
    )
    p.add_argument(
        "--domains-trial",
        choices=["main", "tiny"],
        default="main",
        help="domains section: the main study's trial, or a tiny one (a quick look)",
    )
    p.add_argument(
        "--domains-baseline",
        action="store_true",
        help="domains section: each count also with every per-domain value an MLflow metric",
    )
    p.add_argument("--search-study", default="sparsity", help="search section: the shipped study")
    p.add_argument(
        "--search-seeds", type=int, nargs="+", default=[0, 1, 2], help="search section: seeds"
    )
    _count_flag(p, "--search-trials", 20, "search section")
    p.add_argument(
        "--search-data", default="synthetic", help="search section: a data config (douban, ...)"
    )
    p.add_argument(
        "--search-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="search section: Hydra overrides for both runs (study.early_stop.min_fraction=0.1111)",
    )
    _count_flag(p, "--search-jobs", 1, "search section: seeds run at once, each in its own process")
    r = recipe.RecipeBenchConfig()
    p.add_argument("--recipe-data", default=r.data, help="recipe section: a data config")
    _count_flag(p, "--recipe-rows", r.rows, "recipe section: synthetic rows")
    _count_flag(p, "--recipe-epochs", r.epochs, "recipe section")
    p.add_argument("--recipe-seeds", type=int, nargs="+", default=list(r.seeds))
    p.add_argument("--recipe-models", nargs="+", choices=list(recipe.MODELS), default=None)
    p.add_argument("--recipe-variants", nargs="+", choices=list(recipe.VARIANTS), default=None)
    _add_peer_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json", type=Path, default=None, help="also write the numbers to this JSON file"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def _add_peer_flags(p: argparse.ArgumentParser) -> None:
    c = PeerBenchConfig()
    p.add_argument(
        "--peer-data",
        default=c.data,
        help="peer section: a data config (douban, taobao_fuxictr, ...)",
    )
    p.add_argument(
        "--peer-data-root",
        type=Path,
        default=c.data_root,
        help="peer section: paths.data of a real data config (default: tests/fixtures)",
    )
    _count_flag(
        p,
        "--peer-rows",
        None,
        f"peer section: synthetic rows generated (default {c.rows:,}); other data: the first N "
        "training rows (default all)",
    )
    p.add_argument("--peer-seeds", type=int, nargs="+", default=list(c.seeds), help="peer section")
    _count_flag(p, "--peer-epochs", c.protocol.epochs, "peer section: at most")
    _add_only_flag(p, "--peer-models", PEER_MODELS, "peer section: only this model (repeatable)")
    p.add_argument(
        "--peer-fuxictr-loader",
        choices=FUXICTR_LOADERS,
        default=c.protocol.fuxictr_loader,
        help="peer section: npz (FuxiCTR's own loader, timed) or memory (our tensors: its step alone)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m adasparse_lab.bench", description=__doc__.splitlines()[0]
    )
    for add_flags in (
        _add_general_flags,
        _add_train_serve_flags,
        _add_prep_study_flags,
        _add_method_model_flags,
        _add_step_scale_export_flags,
    ):
        add_flags(p)
    args = p.parse_args(argv)
    at_scale = args.only == ["prep"]  # the scale only when prep is asked for alone
    if args.prep_rows is None:
        args.prep_rows = 85_000_000 if at_scale else 1_000_000
    if args.prep_train_rows is None:
        args.prep_train_rows = 5_000_000 if at_scale else 500_000
    if args.only == ["peer"] and args.threads is None:  # the peer protocol's thread count
        args.threads = PeerBenchConfig().threads
    return args


def _chosen(args: argparse.Namespace, section: str) -> bool:
    """``section`` runs: named by --only, or part of the default run (no --only)."""
    return section in (args.only or SECTIONS)


def _asked(args: argparse.Namespace, section: str) -> bool:
    """``section`` is named by --only (the sections outside the default run)."""
    return section in (args.only or ())


def _show(table: str) -> None:
    """Print a section's table as soon as it is measured."""
    print("\n" + table, flush=True)


def run_export(args: argparse.Namespace):
    cfg = ExportBenchConfig(
        batch_size=args.export_batch_size, seconds=args.export_seconds, seed=args.seed
    )
    result = run_export_bench(cfg)
    _show(format_export(result))
    return result


def run_sections(args: argparse.Namespace) -> tuple:
    """Run and print the chosen sections but export; returns (train, serve, prep, study,
    methods), None where skipped."""
    sections = set(args.only or SECTIONS)
    train = serve = prep = study = methods = None
    if "train" in sections:
        cfg = TrainBenchConfig(
            rows=args.rows, loader_rows=args.loader_rows, warmup_rows=args.warmup_rows,
            repeats=args.repeats, seed=args.seed,
        )  # fmt: skip
        train = run_train_bench(cfg)
        _show(format_train(train))
    if "serve" in sections:
        serve = run_serve_bench(ServeBenchConfig(
            batch_sizes=tuple(args.serve_batch_sizes), prune_fraction=args.serve_prune,
            seconds=args.serve_seconds, seed=args.seed,
        ))  # fmt: skip
        _show(format_serve(serve))
    if "prep" in sections:
        prep = run_prep_bench(
            args.prep_rows, args.seed, train_rows=args.prep_train_rows, workers=args.prep_workers
        )
        _show(format_prep(prep))
    if "study" in sections:
        study = run_study_bench(args.study, args.study_trials)
        _show(format_study(study))
    if "methods" in sections:
        methods = run_methods_bench(MethodsBenchConfig(
            rows=args.method_rows, repeats=args.method_repeats,
            serve_batch_sizes=tuple(args.method_batch_sizes), only=tuple(args.method or ()),
            seed=args.seed,
        ))  # fmt: skip
        _show(format_methods(methods, torch.get_num_threads()))
    return train, serve, prep, study, methods


def _timed(args: argparse.Namespace, config, rows: int, repeats: int):
    """``config`` (a section's config class) timing ``rows`` rows ``repeats`` times, its
    warm-up pass --warmup-rows but no more than ``rows``."""
    warmup = min(args.warmup_rows, rows)
    return config(rows=rows, warmup_rows=warmup, repeats=repeats, seed=args.seed)


def run_models_section(args: argparse.Namespace):
    """The models section when chosen (not part of the default run: ~1 min per model)."""
    if not _asked(args, "models"):
        return None
    cfg = _timed(args, TrainBenchConfig, args.model_rows, args.model_repeats)
    models = run_models_bench(cfg, tuple(args.model or ()))
    _show(format_models(models, torch.get_num_threads()))
    return models


def run_step_section(args: argparse.Namespace) -> dict | None:
    """The step section when chosen: print its table, return its JSON part."""
    if not _chosen(args, "step"):
        return None
    cfg = _timed(args, StepBenchConfig, args.step_rows, args.repeats)
    step = run_step_bench(cfg)
    _show(format_step(step, torch.get_num_threads()))
    rows_per_s = {v: [t.samples_per_s for t in ts] for v, ts in step.timings.items()}
    return {"config": asdict(cfg), "rows_per_s": rows_per_s, "ratios": step_ratios(step)}


def run_compile_section(args: argparse.Namespace) -> dict | None:
    """train.compile against eager (it compiles for tens of seconds): only with ``--only
    compile``."""
    if not _asked(args, "compile"):
        return None
    cfg = _timed(args, StepBenchConfig, args.step_rows, args.repeats)
    result = run_compile_bench(cfg)
    _show(format_compile(result, torch.get_num_threads()))
    return {"config": asdict(cfg)} | result.as_json()


def run_domains(args: argparse.Namespace) -> list | None:
    """The many-domains section (a study and a report per domain count): only with
    ``--only domains``."""
    if not _asked(args, "domains"):
        return None
    results = []
    for n in args.domain_counts:  # each count's line as soon as it is measured
        results.append(run_domains_bench(n, trial=args.domains_trial))
        _show(format_domains(results[-1:]))
        if args.domains_baseline:  # the same study, every per-domain value an MLflow metric
            base = run_domains_bench(n, trial=args.domains_trial, extra=[ALL_AS_METRICS])
            results.append(base)
            _show(format_domains([base]))
            _show(
                f"    {n} domains: driver overhead {results[-2].overhead_s:.2f} s a trial with the"
                f" per-domain artifact, {base.overhead_s:.2f} s with every value a metric"
                f" ({base.overhead_s / max(results[-2].overhead_s, 1e-9):.1f}x)"
            )
    return [r.as_dict() for r in results]


def run_scale(args: argparse.Namespace) -> list | None:
    """The scale section (it starts PostgreSQL and an MLflow server): not part of the default
    run, only with ``--only scale``."""
    if not _asked(args, "scale"):
        return None
    points = run_scale_bench("quick", args.scale_trials, tuple(args.scale_workers))
    _show(format_scale(points))
    return points


def run_layout(args: argparse.Namespace) -> list | None:
    """The layout section (threads or worker processes on this machine's cores): only with
    ``--only layout``."""
    if not _asked(args, "layout"):
        return None
    cores = len(os.sched_getaffinity(0))
    points = run_layout_bench(args.search_study, args.scale_trials, cores)
    _show(format_layout(points))
    return [{"layout": name} | asdict(p) for name, p in points]


def run_search(args: argparse.Namespace) -> dict | None:
    """The search section (plain vs early-stopped studies): only with ``--only search``."""
    if not _asked(args, "search"):
        return None
    runs = run_search_bench(
        args.search_study,
        tuple(args.search_seeds),
        args.search_trials,
        args.search_data,
        tuple(args.search_overrides),
        args.search_jobs,
        args.threads,
    )
    _show(format_search(runs, args.search_study, args.search_data, args.search_overrides))
    return as_json(runs)


def run_recipe(args: argparse.Namespace) -> dict | None:
    """The recipe section (training-recipe ablation): only with ``--only recipe``."""
    if not _asked(args, "recipe"):
        return None
    cfg = recipe.RecipeBenchConfig(
        data=args.recipe_data,
        rows=args.recipe_rows,
        epochs=args.recipe_epochs,
        seeds=tuple(args.recipe_seeds),
        models=tuple(args.recipe_models or recipe.MODELS),
        variants=tuple(args.recipe_variants or recipe.VARIANTS),
    )
    result = recipe.run_recipe_bench(cfg, log=lambda line: print(line, flush=True))
    _show(recipe.format_recipe(result, torch.get_num_threads()))
    return result.as_dict()


def run_peer(args: argparse.Namespace) -> dict | None:
    """The peer section (ours vs FuxiCTR): only with ``--only peer``; without FuxiCTR it says
    why and runs nothing."""
    if not _asked(args, "peer"):
        return None
    reason = missing_peer()
    if reason is not None:
        print("\n" + format_skipped(reason), flush=True)
        return {"skipped": reason}
    default = PeerBenchConfig()
    rows = args.peer_rows or (default.rows if args.peer_data == "synthetic" else None)
    cfg = PeerBenchConfig(
        data=args.peer_data, data_root=args.peer_data_root, rows=rows,
        seeds=tuple(args.peer_seeds), models=tuple(args.peer_models or ()),
        threads=args.threads or default.threads,
        protocol=PeerProtocol(epochs=args.peer_epochs, fuxictr_loader=args.peer_fuxictr_loader),
    )  # fmt: skip
    print(f"\n[13] peer  running: data={cfg.data}, seeds {list(cfg.seeds)} ...", flush=True)
    result = run_peer_bench(cfg)
    _show(format_peer(result))
    return peer_json(result)


def check_cuda(args: argparse.Namespace) -> None:
    """With the gpu section chosen and no CUDA device: say so and exit non-zero, before any
    data is prepared or any other section runs."""
    if not _asked(args, "gpu"):
        return
    try:
        require_cuda()
    except NoCudaError as err:
        print(err, file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def run_gpu(args: argparse.Namespace) -> dict | None:
    """The gpu section (only with ``--only gpu``): print its table, return its JSON part."""
    if not _asked(args, "gpu"):
        return None
    cfg = GpuBenchConfig(rows=args.gpu_rows, auc_epochs=args.gpu_epochs, seed=args.seed)
    result = run_gpu_bench(cfg)
    _show(format_gpu(result))
    return asdict(result) | {"ratios": result.summary()}


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen sections, print the table, return (and optionally write) the JSON."""
    args = parse_args(argv)
    check_cuda(args)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0, load_at_start = time.perf_counter(), load_average()
    machine = describe_machine()
    print(format_machine(machine), flush=True)
    train, serve, prep, study, methods = run_sections(args)
    models = run_models_section(args)
    step = run_step_section(args)
    compiled = run_compile_section(args)
    scale = run_scale(args)
    gpu = run_gpu(args)
    domains = run_domains(args)
    search = run_search(args)
    layout = run_layout(args)
    recipe_json = run_recipe(args)
    peer = run_peer(args)
    exported = run_export(args) if _chosen(args, "export") else None
    payload = to_json(machine, train, serve, prep)
    models_json = None
    if models is not None:
        models_json = {"fit": models.fit, "bare": models.bare, "ratios": models.summary()}
    # Each section that ran adds its JSON part, in this order; one that did not run adds none.
    parts = {
        "step": step,
        "compile": compiled,
        "export": None if exported is None else asdict(exported),
        "study": None if study is None else study.as_dict(),
        "methods": None if methods is None else asdict(methods) | {"ratios": methods.summary()},
        "models": models_json,
        "scale": None if scale is None else [asdict(p) for p in scale],
        "gpu": gpu,
        "domains": domains,
        "search": search,
        "layout": layout,
        "recipe": recipe_json,
        "peer": peer,
    }
    payload |= {key: part for key, part in parts.items() if part is not None}
    load = {"start": load_at_start, "end": load_average()}
    payload |= {"load_average": load, "wall_seconds": time.perf_counter() - t0}
    print(f"\nwall time {payload['wall_seconds']:.0f} s; " + format_load(**load, m=machine))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
    if gpu is not None and gpu["errors"]:
        raise SystemExit(f"gpu section: {len(gpu['errors'])} part(s) failed (above)")
    return payload


if __name__ == "__main__":
    main()
