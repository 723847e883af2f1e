"""The machine a number was measured on: CPU model, usable CPUs, platform and Python.

One description for every part that records it (the benchmark's table, a study's ``machine``
attribute, clone-to-report), from the standard library only: clone-to-report imports it on a
bare ``python3`` before any venv exists.
"""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo (Linux), else the platform's processor."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), else every logical CPU."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0


def describe() -> dict[str, str]:
    """The CPU model, the platform and the Python version."""
    return {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(*packages: str) -> dict[str, str]:
    """{package: its ``__version__``}, each imported on demand."""
    return {name: importlib.import_module(name).__version__ for name in packages}


def summary() -> str:
    """One line: CPU model, usable CPUs, platform, Python version."""
    m = describe()
    return f"{m['cpu']}, {usable_cpus()} usable CPUs, {m['platform']}, Python {m['python']}"
