"""Data preparation and the out-of-core store: preparation time and peak memory, training
samples/s from the memory-mapped store vs in RAM, and several workers reading one store.

Every measurement runs in a fresh Python subprocess so that its peak resident set size, read
by the child itself, counts numpy, polars and torch allocations alike and nothing from the
benchmark process (see ``peak_rss_bytes``: on Linux ru_maxrss would include the parent's RSS).

- prep: a cold ``prepare`` of N rows of the chunked synthetic generator (``chunk_rows``) into
  a store (data.storage=mmap), its time and peak RSS; then a second, cached ``prepare``.
- train: one store of ``train_rows`` training rows read both ways in one child: an epoch of
  ``fit`` (the benchmark architecture) from RAM (global shuffle) and memory-mapped (block
  shuffle), interleaved ``repeats`` times; the ratio mmap / memory of samples/s.
- workers: ``workers`` children map the prep store at once, each reads its train split for one
  shuffled epoch; their peak RSS summed (an upper bound: the page cache they share is counted
  once per worker) and their proportional set size (PSS, shared pages split) summed.
Run a child alone with ``python -m adasparse_lab.bench.preparation --rows N --cache-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RUSAGE_UNIT = 1024 if sys.platform.startswith("linux") else 1  # ru_maxrss: KiB on Linux, else B
CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class PrepBenchResult:
    rows: int
    train_rows: int
    seconds: float  # cold prepare: generate + encode + write the store
    reload_seconds: float  # second prepare, from the store
    peak_rss_bytes: int  # peak of the child after the cold prepare
    import_rss_bytes: int  # peak of the child after its imports, before any data
    cache_bytes: int
    train: dict = field(default_factory=dict)  # samples/s memory vs mmap (measure_train)
    workers: dict = field(default_factory=dict)  # several readers of one store

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def _proc_kb(path: str, key: str) -> int | None:
    """``key``'s value in a /proc status file (kB), in bytes; None where unknown."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size. On Linux: VmHWM of /proc/self/status, because
    ru_maxrss carries over fork + exec and so starts at the parent's RSS at spawn time (a
    child of a 1 GB parent reports >= 1 GB); elsewhere ru_maxrss."""
    peak = _proc_kb("/proc/self/status", "VmHWM:")
    return (
        peak
        if peak is not None
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RUSAGE_UNIT
    )


def pss_bytes() -> int:
    """Proportional set size now (shared pages divided among their users); 0 if unknown."""
    return _proc_kb("/proc/self/smaps_rollup", "Pss:") or 0


def _source(rows: int, seed: int):
    from adasparse_lab.data.sources import RandomSplit, SyntheticSource

    chunk = min(CHUNK_ROWS, rows)
    return SyntheticSource(split=RandomSplit(seed=seed), n_rows=rows, seed=seed, chunk_rows=chunk)


def measure_in_process(rows: int, cache_dir: Path, seed: int) -> PrepBenchResult:
    """The child's work: only meaningful in a fresh process (the RSS peak is the process's)."""
    from adasparse_lab.data.prepare import prepare
    from adasparse_lab.data.synthetic import SCHEMA

    import_rss = peak_rss_bytes()
    t0 = time.perf_counter()
    data = prepare(_source(rows, seed), SCHEMA, cache_dir, storage="mmap")
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    train_rows = len(data.splits["train"])
    del data
    t0 = time.perf_counter()
    prepare(_source(rows, seed), SCHEMA, cache_dir, storage="mmap")
    reload_seconds = time.perf_counter() - t0
    cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    return PrepBenchResult(rows, train_rows, seconds, reload_seconds, peak, import_rss, cache_bytes)


def _epoch_samples_per_s(data, batch_size: int, seed: int) -> float:
    import torch

    from adasparse_lab.bench.workload import build_model, with_train_rows
    from adasparse_lab.run.fit import TrainSettings, fit

    torch.manual_seed(seed)
    model = build_model(data, None)
    settings = TrainSettings(
        epochs=1, batch_size=batch_size, seed=seed, device="cpu", progress=False, patience=0
    )
    return (
        fit(model, with_train_rows(data, len(data.splits["train"])), settings)
        .history[0]
        .samples_per_s
    )


def measure_train(
    train_rows: int, cache_dir: Path, seed: int, repeats: int, batch_size: int
) -> dict:
    """Samples/s of one training epoch from the same store in RAM and memory-mapped."""
    from adasparse_lab.data.prepare import load_store, prepare
    from adasparse_lab.data.store import read_meta
    from adasparse_lab.data.synthetic import SCHEMA

    rows = int(train_rows / 0.8) + 1
    path = prepare(_source(rows, seed), SCHEMA, cache_dir, storage="mmap").cache_path
    meta = read_meta(path)
    speeds: dict[str, list[float]] = {"memory": [], "mmap": []}
    for _ in range(repeats):
        for storage in speeds:
            data = load_store(path, SCHEMA, meta, storage)
            speeds[storage].append(_epoch_samples_per_s(data, batch_size, seed))
            del data
    best = {k: max(v) for k, v in speeds.items()}
    return {
        "train_rows": meta["rows"]["train"],
        "batch_size": batch_size,
        "samples_per_s": speeds,
        "mmap_over_memory": best["mmap"] / best["memory"],
    }


def read_store(path: Path, batch_size: int) -> dict:
    """A worker: map the store, read the train split for one shuffled epoch."""
    import torch

    from adasparse_lab.data.batches import iterate
    from adasparse_lab.data.prepare import load_store
    from adasparse_lab.data.store import read_meta
    from adasparse_lab.data.synthetic import SCHEMA

    data = load_store(path, SCHEMA, read_meta(path), "mmap")
    t0, clicks = time.perf_counter(), 0.0
    gen = torch.Generator().manual_seed(0)
    for batch in iterate(data.splits["train"], batch_size, shuffle=True, generator=gen):
        clicks += float(batch.label.sum())
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_bytes": peak_rss_bytes(),
        "pss_bytes": pss_bytes(),
    }


def _reader_result(proc: subprocess.Popen) -> dict:
    """A store reader's JSON line; a reader that failed is an error with its stderr."""
    out, err = proc.communicate()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"store reader failed (exit {proc.returncode}):\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure_workers(path: Path, workers: int, batch_size: int) -> dict:
    """``workers`` readers of one store at once, as study workers share a prepared store."""
    cmd = [sys.executable, "-m", "adasparse_lab.bench.preparation", "--read-store", str(path),
           "--batch-size", str(batch_size)]  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(workers):
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        results = [_reader_result(p) for p in procs]
    finally:  # a failed reader: the others are not left running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return {
        "workers": workers,
        "seconds": max(r["seconds"] for r in results),
        "total_peak_rss_bytes": sum(r["peak_rss_bytes"] for r in results),
        "total_pss_bytes": sum(r["pss_bytes"] for r in results),
    }


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "adasparse_lab.bench.preparation", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(
            f"preparation benchmark failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_prep_bench(
    rows: int,
    seed: int = 0,
    train_rows: int = 5_000_000,
    workers: int = 4,
    repeats: int = 2,
    batch_size: int = 1024,
) -> PrepBenchResult:
    """Preparation of ``rows`` rows, training from a store of min(train_rows, 0.8 rows) train
    rows both ways, and ``workers`` readers of the prepared store; each in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="adasparse-bench-prep-") as tmp:
        base = ["--seed", str(seed), "--batch-size", str(batch_size)]
        prep = _child(["--rows", str(rows), "--cache-dir", f"{tmp}/prep", *base])
        store = next(p for p in Path(tmp, "prep").iterdir() if not p.name.startswith("."))
        train_rows = max(min(train_rows, int(0.8 * rows)), 1_000)
        train = _child(["--train-rows", str(train_rows), "--cache-dir", f"{tmp}/train",
                        "--repeats", str(repeats), *base])  # fmt: skip
        readers = measure_workers(store, workers, batch_size) if workers else {}
    return PrepBenchResult(**prep | {"train": train, "workers": readers})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="prep: rows to prepare")
    parser.add_argument("--train-rows", type=int, help="train: memory vs mmap on this many rows")
    parser.add_argument("--read-store", type=Path, help="a worker: read this store's train split")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.read_store is not None:
        result = read_store(args.read_store, args.batch_size)
    elif args.train_rows is not None:
        result = measure_train(
            args.train_rows, args.cache_dir, args.seed, args.repeats, args.batch_size
        )
    else:
        result = measure_in_process(args.rows, args.cache_dir, args.seed).__dict__
    print(json.dumps(result))  # one JSON line: the parent parses it


if __name__ == "__main__":
    main()
