"""Data preparation: wall time and peak memory of ``prepare`` on N synthetic rows.

The work runs in a fresh Python subprocess so that its peak resident set size, read by the
child itself, counts numpy, polars and torch allocations alike and nothing from the benchmark
process (see ``peak_rss_bytes``: on Linux ru_maxrss would include the parent's RSS). The child reports the peak after its
imports, the time and peak of a cold ``prepare`` (generate, encode, write the parquet cache,
load tensors) into a temporary cache directory, and the time of a second, cached ``prepare``.
Run it alone with ``python -m adasparse_lab.bench.preparation --rows N --cache-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUSAGE_UNIT = 1024 if sys.platform.startswith("linux") else 1  # ru_maxrss: KiB on Linux, else B


@dataclass(frozen=True)
class PrepBenchResult:
    rows: int
    train_rows: int
    seconds: float  # cold prepare: generate + encode + write cache + tensors
    reload_seconds: float  # second prepare, from the cache
    peak_rss_bytes: int  # peak of the child after the cold prepare
    import_rss_bytes: int  # peak of the child after its imports, before any data
    cache_bytes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def peak_rss_bytes() -> int:
    """This process's peak resident set size. On Linux: VmHWM of /proc/self/status, because
    ru_maxrss carries over fork + exec and so starts at the parent's RSS at spawn time (a
    child of a 1 GB parent reports >= 1 GB); elsewhere ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RUSAGE_UNIT


def measure_in_process(rows: int, cache_dir: Path, seed: int) -> PrepBenchResult:
    """The child's work: only meaningful in a fresh process (the RSS peak is the process's)."""
    from adasparse_lab.data.prepare import prepare
    from adasparse_lab.data.sources import RandomSplit, SyntheticSource
    from adasparse_lab.data.synthetic import SCHEMA

    import_rss = peak_rss_bytes()
    source = SyntheticSource(split=RandomSplit(seed=seed), n_rows=rows, seed=seed)
    t0 = time.perf_counter()
    data = prepare(source, SCHEMA, cache_dir)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    train_rows = len(data.splits["train"])
    del data
    t0 = time.perf_counter()
    prepare(source, SCHEMA, cache_dir)
    reload_seconds = time.perf_counter() - t0
    cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    return PrepBenchResult(rows, train_rows, seconds, reload_seconds, peak, import_rss, cache_bytes)


def run_prep_bench(rows: int, seed: int = 0) -> PrepBenchResult:
    """Run ``measure_in_process`` in a fresh interpreter with a temporary cache directory."""
    with tempfile.TemporaryDirectory(prefix="adasparse-bench-prep-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "adasparse_lab.bench.preparation",
            "--rows",
            str(rows),
            "--cache-dir",
            tmp,
            "--seed",
            str(seed),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"preparation benchmark failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return PrepBenchResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure_in_process(args.rows, args.cache_dir, args.seed)
    print(json.dumps(result.__dict__))  # one JSON line: the parent parses it


if __name__ == "__main__":
    main()
