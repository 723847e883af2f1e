"""From configuration to objects: ``instantiate`` (Hydra's, with our own errors surfaced as
they are) and the ``key=value`` command lines of the commands that read a stored study
(report, export, study.claims, study.matched). Those are parsed here, not by Hydra, which would
read ``study=a,b`` as a sweep over two values. And the one rule that keeps credentials out of
everything written: ``redact_url`` (a URL's password as ``***``), ``redacted(cfg)`` and Hydra's
saved config (``SaveRedactedConfig``)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

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


# -- credentials ---------------------------------------------------------------------------
REDACTED = "***"
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "token", "access_token", "secret"}
# Inside any text (a log line, an override, a YAML dump): scheme://user:password@, and a
# password given in a URL's query (libpq reads ?password=...).
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s/'\"]*@")
_QUERY_SECRET = re.compile(
    rf"([?&](?:{'|'.join(sorted(SECRET_QUERY_KEYS))})=)[^&\s'\"]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``, or libpq's ``?password=``) replaced by
    ``***``; the user name, host and the rest are kept, so the URL still says where things
    are. A URL without a password is returned unchanged. Written study attributes, configs,
    MLflow params and printed lines all pass through here (issue 22: every trial's
    config.yaml carried the database password to the MLflow server)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
        secret = [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
        query = urlencode(secret, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def without_password(url: str) -> str:
    """``url`` with no password at all (``user@host``; a redacted ``***`` too): what a client
    opens a recorded URL with, the password then coming from the environment (PGPASSWORD,
    MLFLOW_TRACKING_PASSWORD)."""
    parts = urlsplit(url) if "://" in url else None
    userinfo, at, host = parts.netloc.rpartition("@") if parts else ("", "", "")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}@{host}"))


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` inside ``text`` (a log line, ``key=url`` overrides,
    a YAML dump) with the password as ``***``; for text where URLs are not whole values."""
    text = _USERINFO.sub(rf"\1:{REDACTED}@", text)
    return _QUERY_SECRET.sub(rf"\1{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    return redact_url(value) if isinstance(value, str) and "://" in value else value


def redacted(cfg: DictConfig) -> DictConfig:
    """A resolved copy of ``cfg`` with every URL's password redacted (``redact_url``): what is
    written (the study's ``config`` attribute, a run's config.yaml, MLflow params); ``cfg``
    itself keeps the password, to connect with."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create(_walk(container))


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v) for v in node]
    return _redact_value(node)


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename: never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exit_with_error(log: logging.Logger, err: Exception, unexpected: bool = False) -> NoReturn:
    """End a Hydra command (sweep, train) with ``error: <message>``, redacted, the error logged
    (with its traceback when ``unexpected``; the log handlers redact it). An exception left to
    Hydra was printed after "Error executing job with overrides: [...]": with a password typed
    into a URL."""
    message = redact_text(f"{type(err).__name__}: {err}" if unexpected else str(err))
    if unexpected:
        log.exception("unexpected error: %s", message)
    else:
        log.error("%s", message)
    sys.exit(f"error: {message}")


class RedactUrls(logging.Filter):
    """A logging filter (on every handler of Hydra's job logging, conf/config.yaml) that
    writes a record's message and traceback with each URL's password redacted (redact_text):
    a line of ours or of a library (SQLAlchemy, MLflow, Optuna) that names a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact_text(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class SaveRedactedConfig(Callback):
    """Hydra's ``.hydra/`` folder (config.yaml, hydra.yaml, overrides.yaml), written by us
    with every URL's password redacted. conf/config.yaml sets ``hydra.output_subdir: null`` so
    that Hydra itself writes none of them: its copy held ``study.storage`` and
    ``tracking.uri`` as given on the command line, password included."""

    def __init__(self, output_subdir: str = ".hydra") -> None:
        self.output_subdir = output_subdir

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.runtime.output_dir) / self.output_subdir
        folder.mkdir(parents=True, exist_ok=True)
        task = {k: v for k, v in config.items() if k != "hydra"}
        files = {
            "config.yaml": OmegaConf.create(task),
            "hydra.yaml": OmegaConf.create({"hydra": config.hydra}),
            "overrides.yaml": config.hydra.overrides.task,
        }
        for name, node in files.items():  # unresolved, as Hydra saves them
            write_atomic(folder / name, redact_text(OmegaConf.to_yaml(node)))


DOMAIN_METRICS_MAX = 50  # conf/tracking/mlflow.yaml's default, for configs stored without it


def domain_metrics_max(tracking: DictConfig) -> int:
    """``tracking.domain_metrics_max``: the most domains a run logs per-domain MLflow metrics
    for (store.tracking.Tracker.log_run_metrics); checked before any data is read."""
    value = tracking.get("domain_metrics_max", DOMAIN_METRICS_MAX)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"tracking.domain_metrics_max={value!r} must be an integer >= 0 (the most domains "
            "a run logs per-domain MLflow metrics for; above it they go to one artifact)"
        )
    return value
