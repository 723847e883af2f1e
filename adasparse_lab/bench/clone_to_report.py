"""Clone-to-report time: what a new user waits for, measured as they would meet it.

``make clone-to-report`` (= ``python3 -m adasparse_lab.bench.clone_to_report``) clones this
repository into a temporary folder, then times ``make setup`` (the venv: torch, then the
project) and ``make study`` (the README's main job, up to its HTML report) there, and prints
both with the machine. Standard library only (adasparse_lab.machine is too): it runs before
any venv exists. The README's durations come from this command.

    python3 -m adasparse_lab.bench.clone_to_report [--source DIR] [--keep] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adasparse_lab.machine import summary  # standard library only, like this file

REPO = Path(__file__).resolve().parents[2]
STAGES = (("clone", None), ("setup", ["make", "setup"]), ("study", ["make", "study"]))


def machine() -> str:
    return summary()


def run_stage(cmd: list[str], cwd: Path, log) -> float:
    """Seconds ``cmd`` took in ``cwd``; its output goes to ``log``; a failure stops the run."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise StageFailed(f"`{' '.join(cmd)}` failed ({done.returncode}); its output: {log.name}")
    return time.perf_counter() - t0


class StageFailed(RuntimeError):
    """A stage exited non-zero: the temporary folder is kept for its log."""


def head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def measure(source: Path, workdir: Path) -> tuple[dict[str, float], str]:
    """Seconds per stage: clone ``source`` into ``workdir``, then make setup, make study; and
    the commit cloned (the source may move on during the study)."""
    clone = workdir / "adasparse-lab"
    seconds: dict[str, float] = {}
    with open(workdir / "clone_to_report.log", "w") as log:
        for stage, cmd in STAGES:
            print(f"clone_to_report: {stage} ...", flush=True)
            if cmd is None:
                cmd, cwd = ["git", "clone", "--quiet", str(source), str(clone)], workdir
            else:
                cwd = clone
            seconds[stage] = run_stage(cmd, cwd, log)
            if stage == "clone":
                commit = head(clone)
    seconds["total"] = sum(seconds.values())
    if not (clone / "reports" / "sparsity" / "report.html").exists():
        raise StageFailed(f"make study wrote no reports/sparsity/report.html; see {log.name}")
    return seconds, commit


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=REPO, help="repository to clone (this one)")
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    p.add_argument("--json", type=Path, help="also write the seconds here")
    args = p.parse_args(argv)
    args.source = args.source.resolve()  # git clone runs in the temporary folder
    workdir = Path(tempfile.mkdtemp(prefix="clone_to_report_"))
    try:
        seconds, commit = measure(args.source, workdir)
    except StageFailed as err:
        sys.exit(f"clone_to_report: {err}")  # workdir kept: the log is in it
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nclone to report of {commit} on {machine()}")
    for stage, s in seconds.items():
        print(f"  {stage:<6} {int(s // 60):>2} min {s % 60:4.1f} s")
    if args.keep:
        print(f"  clone kept in {workdir}")
    if args.json:
        result = {"machine": machine(), "commit": commit, "seconds": seconds}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
