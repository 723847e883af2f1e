"""MLflow tracking through an explicit client (no global fluent state, so a sweep can hold a
parent run and many child runs). Metrics are logged in batches: per-call logging is 10-50x
slower on the SQLite store."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import (
    DOMAIN_METRICS_MAX,
    domain_metrics_max,
    redact_url,
    without_password,
)
from adasparse_lab.metrics import FLOPS_AGGREGATES, safe_name
from adasparse_lab.store.tracking_db import prepare_sqlite_store

log = logging.getLogger(__name__)
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
# A run with more domains than tracking.domain_metrics_max logs its aggregates as metrics and
# every per-domain value in one artifact (columns key, value: the metric keys they would have
# had), named by the run's tag; results.runs reads them back. MLflow's SQL store writes a
# metric in about 0.4 ms, so 1,000 domains (about 20 values each) cost about 8 s a run.
DOMAIN_METRICS_FILE = "domain_metrics.parquet"
DOMAIN_METRICS_TAG = "domain_metrics"
DOMAIN_METRICS_SCHEMA = {"key": pl.String, "value": pl.Float64}


def domain_keys(keys: Iterable[str], domain_names: list[str]) -> set[str]:
    """The keys that hold one domain's value, by the shape of the names the run writes, the
    domain ``<d>`` (its safe name, which may hold '/') in its fixed place: ``params/<d>``,
    ``<split>/sparsity/<d>/overall|l<k>``, ``<split>/latency/b<b>/<d>`` and
    ``<split>/<metric>/<d>`` for every other metric. An aggregate stays one whatever the
    domains are called (a domain named 'ratio', 'overall', 'l1' or 'network')."""
    names = {safe_name(d) for d in domain_names}
    return {k for k in keys if _domain_of(k.split("/")) in names}


def _domain_of(parts: list[str]) -> str | None:
    """The span of a metric key's segments that would name its domain (None: an aggregate)."""
    if parts[0] == "params":
        rest = "/".join(parts[1:])
        return None if rest in ("", "network") else rest
    if len(parts) < 3:
        return None
    metric = parts[1]
    if metric == "sparsity":  # <split>/sparsity/overall|l<k> are the split's
        last = parts[-1]
        per_layer = last == "overall" or (last[:1] == "l" and last[1:].isdigit())
        return "/".join(parts[2:-1]) if len(parts) >= 4 and per_layer else None
    if metric == "latency":  # <split>/latency/ratio, dense_b<b>, ... are the split's
        timed = len(parts) >= 4 and parts[2][:1] == "b" and parts[2][1:].isdigit()
        return "/".join(parts[3:]) if timed else None
    rest = "/".join(parts[2:])
    return None if metric == "flops" and rest in FLOPS_AGGREGATES else rest


def flatten(cfg: Mapping | DictConfig, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'a.b.c': 'value'} for MLflow params."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    out: dict[str, str] = {}
    for key, value in cfg.items():  # type: ignore[union-attr]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


SQLITE = "sqlite:///"


def absolute_uri(uri: str, base: Path | None = None) -> str:
    """``uri`` with a relative SQLite path made absolute (against ``base``, else the current
    directory), so that a study stored with ``sqlite:///studies/mlflow.db`` reads back from any
    folder. Other URIs (a server, an absolute path) are returned as they are."""
    if not uri.startswith(SQLITE) or uri.startswith(SQLITE + "/"):
        return uri
    path = Path(uri.removeprefix(SQLITE)).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return SQLITE + str(path.resolve())


def stored_uri(uri: str, studies_dir: Path) -> str:
    """The tracking URI a study recorded, made readable from here. Studies now record it
    absolute; an older one recorded ``sqlite:///<relative path>``, relative to the folder it
    ran in: the folder above ``studies_dir`` when the file is not found from here. A recorded
    URI's redacted password is left out: the client finds it in the environment."""
    uri = without_password(uri)
    here = absolute_uri(uri)
    if here == uri or Path(here.removeprefix(SQLITE)).is_file():
        return here
    return absolute_uri(uri, Path(studies_dir).expanduser().resolve().parent)


def credentials_to_env(uri: str) -> str:
    """The URI to open an MLflow client with. A tracking server's ``user:password@`` is handed
    to MLflow the library's own way, ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
    (unless already set), and left out of the URI: every MLflow client of this process (and
    of the workers it starts) authenticates, the study's end included, and MLflow's own "View
    run at" lines print no password. A database URI is opened as given: no variable of
    MLflow's carries its password (pass it as PGPASSWORD or in ~/.pgpass instead)."""
    parts = urlsplit(uri)
    if parts.password is None or parts.scheme not in ("http", "https"):
        return uri
    password = unquote(parts.password)
    if os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password) != password:
        return uri  # the environment holds another password: the URI's is the one asked for
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    return without_password(uri)


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # heavy import: only when tracking is on

    return MlflowClient(tracking_uri=uri)


class Tracker:
    """One MLflow experiment; creates runs (optionally nested) and logs to them by id."""

    def __init__(
        self,
        uri: str,
        artifact_root: str | None,
        experiment: str,
        domain_metrics_max: int = DOMAIN_METRICS_MAX,
    ) -> None:
        self.domain_metrics_max = domain_metrics_max
        uri = absolute_uri(uri)  # absolute: a recorded URI reads back from any folder
        self.uri = redact_url(uri)  # recorded with the study and printed: no password
        if uri.startswith(SQLITE):  # complete before any client sees it: kill-safe
            prepare_sqlite_store(Path(uri.removeprefix(SQLITE)))
        self.client = _client(credentials_to_env(uri))
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            # A tracking server keeps artifacts itself (its --artifacts-destination, shared by
            # every machine); a local store gets an explicit location: the default is relative
            # to the current directory.
            location = Path(artifact_root or "mlartifacts").expanduser().resolve() / experiment
            remote = uri.startswith(("http://", "https://"))
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=None if remote else location.as_uri()
                )
            except Exception:  # another worker created it first
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id

    def start_run(
        self,
        name: str | None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        all_tags = dict(tags or {})
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(safe_name(k), float(v), now, step) for k, v in metrics.items() if v == v]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])

    def domains_as_metrics(self, n_domains: int) -> bool:
        """Whether a run with ``n_domains`` logs its per-domain values as MLflow metrics."""
        return n_domains <= self.domain_metrics_max

    def log_run_metrics(
        self, run_id: str, metrics: Mapping[str, float], domain_names: list[str], out_dir: Path
    ) -> None:
        """A run's final values. Up to ``domain_metrics_max`` domains every value is a metric.
        Above it the aggregates are metrics and each domain's values go to the artifact
        ``DOMAIN_METRICS_FILE`` (key, value; written to ``out_dir``), logged before the run's
        DOMAIN_METRICS_TAG names it: a tagged run has its file. results.runs reads them back
        under the same keys. An undefined (NaN) value is left out, as log_metrics does."""
        if self.domains_as_metrics(len(domain_names)):
            self.log_metrics(run_id, metrics)
            return
        per_domain = domain_keys(metrics, domain_names)
        keys = [k for k in metrics if k in per_domain and metrics[k] == metrics[k]]  # no NaN
        values = [float(metrics[k]) for k in keys]
        path = out_dir / DOMAIN_METRICS_FILE
        frame = pl.DataFrame({"key": keys, "value": values}, schema=DOMAIN_METRICS_SCHEMA)
        frame.write_parquet(path)
        self.client.log_artifact(run_id, str(path))
        self.set_tags(run_id, {DOMAIN_METRICS_TAG: DOMAIN_METRICS_FILE})
        self.log_metrics(run_id, {k: v for k, v in metrics.items() if k not in per_domain})

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v)[:5000])

    def log_artifacts(self, run_id: str, paths: Iterable[Path]) -> None:
        for p in paths:
            if p.is_dir():
                self.client.log_artifacts(run_id, str(p), artifact_path=p.name)
            elif p.exists():
                self.client.log_artifact(run_id, str(p))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def tracker_from_config(tracking_cfg: DictConfig, experiment: str) -> Tracker | None:
    if not tracking_cfg.enabled:
        return None
    limit = domain_metrics_max(tracking_cfg)
    return Tracker(tracking_cfg.uri, tracking_cfg.artifact_root, experiment, limit)


# The MLflow UI (3.x) opens an experiment on its GenAI "Overview / Traces" page when the
# browser's workflow setting says GenAI (a fresh browser's default); the runs table has its own
# URL, which every study prints. The experiment's kind is tagged too, for UIs that honour it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make mlflow-ui` serves


def runs_url(experiment_id: str, address: str = UI_ADDRESS) -> str:
    """The MLflow UI's runs table of an experiment (not the GenAI overview page)."""
    return f"{address.rstrip('/')}/#/experiments/{experiment_id}/runs"


def tag_experiment_kind(tracker: Tracker) -> None:
    """Tag the experiment's kind once. The server's tag write is check-then-insert, so workers
    starting together can both insert; the one that loses (a unique-key error) finds the tag
    written by the other and goes on. Any other failure raises."""
    for key, value in EXPERIMENT_KIND.items():
        if _experiment_tag(tracker, key) == value:
            continue
        try:
            tracker.client.set_experiment_tag(tracker.experiment_id, key, value)
        except Exception:
            if _experiment_tag(tracker, key) != value:
                raise


def _experiment_tag(tracker: Tracker, key: str) -> str | None:
    return tracker.client.get_experiment(tracker.experiment_id).tags.get(key)
