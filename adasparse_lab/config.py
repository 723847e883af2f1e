"""From configuration to objects: ``instantiate`` (Hydra's, with our own errors surfaced as
they are) and the ``key=value`` command lines of the commands that read a stored study
(report, export, study.claims, study.matched). Those are parsed here, not by Hydra, which would
read ``study=a,b`` as a sweep over two values."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from adasparse_lab.errors import ConfigError, DataError


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


def run_command(
    argv: Sequence[str] | None,
    command: str,
    keys: Mapping[str, str],
    run: Callable[[dict[str, str]], int],
) -> int:
    """A ``key=value`` command's main: ``argv`` (``sys.argv[1:]`` when None) parsed, then
    ``run(args)``; a bad command line is printed as ``error: ...`` with exit status 2."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, command, keys)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run(args)


def exit_with(main: Callable[[], int]) -> NoReturn:
    """``python -m``: exit with ``main()``'s status; a ConfigError it raises (a study not
    found, ...) ends the process with ``error: <message>``."""
    try:
        sys.exit(main())
    except ConfigError as err:
        sys.exit(f"error: {err}")


def instantiate(node: DictConfig, key: str, **kwargs):
    """hydra.utils.instantiate, with our own config/data errors surfaced as they are."""
    try:
        return hydra_instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        raise ConfigError(f"{key}: {err}") from None
