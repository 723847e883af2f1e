"""The ``key=value`` command lines of the commands that read a stored study (report, export,
study.claims, study.matched). Parsed here, not by Hydra, which would read ``study=a,b`` as a
sweep over two values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adasparse_lab.errors import ConfigError


def usage(command: str, keys: Mapping[str, str], required: Sequence[str]) -> str:
    """``usage: python -m <command> <required>=... [key=value ...]`` and one line per key."""
    head = " ".join(f"{k}=<{k}>" for k in required)
    lines = [f"  {k:<10} {v}" for k, v in keys.items()]
    return "\n".join([f"usage: python -m {command} {head} [key=value ...]", *lines])


def parse_args(
    argv: Sequence[str], command: str, keys: Mapping[str, str], required: Sequence[str] = ("study",)
) -> dict[str, str]:
    """``argv`` as a dict; an unknown key, an item without ``=`` or a missing required key is a
    ConfigError that names it and ends with the usage."""
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise ConfigError(f"unknown argument {item!r}\n{usage(command, keys, required)}")
        args[key] = value
    for key in required:
        if not args.get(key):
            raise ConfigError(f"{key}=... is required\n{usage(command, keys, required)}")
    return args
