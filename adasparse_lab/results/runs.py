"""The MLflow side of a stored study: one ``search_runs`` per run kind (trial, reeval,
reference), flattened into polars tables; artifacts are read only for the runs that need them.
The one reader of a study's runs: results.collect builds the report's and the end-of-study
summary's (results.pareto_table) tables from it.

Run tags (the sweep's contract): ``kind`` = study | trial | reeval | reference,
``trial_number``, ``seed``, ``method`` (absent in older studies: 'dense' for the reference).
Metric keys use sanitised domain names (metrics.safe_name). A run with more domains than
``tracking.domain_metrics_max`` holds its per-domain values, under the same keys, in the
artifact its ``domain_metrics`` tag names (store.tracking.Tracker.log_run_metrics).
Costs and sparsity are read from the validation split (``val/flops/ratio``,
``val/sparsity/<domain>/l<k>``, ``val/sparsity/<domain>/overall``), like the objectives.
``latency_ratio``: the run's ``val/latency/ratio``; per domain, ``val/latency/b<b>/<domain>``
over ``val/latency/dense_b<b>`` at the largest batch size b (latency.py), the same batch the
run's ``val/latency/ratio`` uses.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import polars as pl

from adasparse_lab.metrics import safe_name
from adasparse_lab.store.tracking import DOMAIN_METRICS_TAG

log = logging.getLogger(__name__)
RUN_KINDS = ("trial", "reeval", "reference")
_LAYER_KEY = re.compile(r"^val/sparsity/(.+)/l(\d+)$")
_DENSE_LATENCY = re.compile(r"^val/latency/dense_b(\d+)$")

RUN_SCHEMA = {
    "kind": pl.String,
    "run_id": pl.String,
    "status": pl.String,
    "number": pl.Int64,
    "seed": pl.Int64,
    "auc": pl.Float64,
    "test_auc": pl.Float64,
    "flops_ratio": pl.Float64,
    "sparsity": pl.Float64,
    "start_ms": pl.Int64,
    "method": pl.String,
    "latency_ratio": pl.Float64,
}
DOMAIN_SCHEMA = {
    "kind": pl.String,
    "run_id": pl.String,
    "number": pl.Int64,
    "seed": pl.Int64,
    "domain": pl.String,
    "val_auc": pl.Float64,
    "test_auc": pl.Float64,
    "flops_ratio": pl.Float64,
    "sparsity": pl.Float64,
    "latency_ratio": pl.Float64,
}
# report column -> MLflow metric key (per domain: of the domain's safe name)
RUN_METRICS = {
    "auc": "val/mean_domain_auc",
    "test_auc": "test/mean_domain_auc",
    "flops_ratio": "val/flops/ratio",
    "sparsity": "val/sparsity/overall",
    "latency_ratio": "val/latency/ratio",
}
DOMAIN_METRICS = {
    "val_auc": "val/auc/{}",
    "test_auc": "test/auc/{}",
    "flops_ratio": "val/flops_ratio/{}",
    "sparsity": "val/sparsity/{}/overall",
}
LAYER_SCHEMA = {
    "run_id": pl.String,
    "domain": pl.String,
    "position": pl.Int64,
    "sparsity": pl.Float64,
}


@dataclass
class RunTables:
    """runs: one row per run; domains: one per (run, domain); layers: one per (run, domain,
    masked position). ``handles`` keeps the MLflow objects needed to read artifacts later."""

    runs: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RUN_SCHEMA))
    domains: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DOMAIN_SCHEMA))
    layers: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LAYER_SCHEMA))
    handles: dict = field(default_factory=dict)  # run_id -> mlflow Run
    client: object | None = None
    warnings: list[str] = field(default_factory=list)


def _local_store_missing(uri: str) -> bool:
    # Opening a missing SQLite store would create (and migrate) an empty one: refuse instead.
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def search_runs(client, experiment_id: str, kind: str, status: str | None = None) -> list:
    """Every run of one kind (trial, reeval, reference), all pages; only ``status`` ones
    (e.g. 'FINISHED') when given."""
    query = f"tags.kind = '{kind}'" + (f" and attributes.status = '{status}'" if status else "")
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=query,
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _int_tag(tags: dict, key: str) -> int | None:
    try:
        return int(tags[key])
    except (KeyError, TypeError, ValueError):
        return None


def _latency_batch(m: dict[str, float]) -> int | None:
    """The largest batch size a run timed its dense model at (None: no latency measured)."""
    sizes = [int(hit.group(1)) for k in m if (hit := _DENSE_LATENCY.match(k))]
    return max(sizes) if sizes else None


def _domain_latency(m: dict[str, float], safe: str, b: int | None) -> float | None:
    """A domain's measured latency over the dense model's, at the largest batch size ``b``
    timed (found once per run: a run holds thousands of metrics when it has many domains)."""
    if b is None:
        return None
    value, dense = m.get(f"val/latency/b{b}/{safe}"), m[f"val/latency/dense_b{b}"]
    return None if value is None or not dense else value / dense


def _domain_rows(
    kind: str, run_id: str, m: dict[str, float], number, seed, names: dict[str, str]
) -> tuple[list, list]:
    """Per-domain and per-layer rows of one run from its values ``m``; ``names`` maps safe
    names to domain names. A domain the run logged no value of has no row (a failed or
    unfinished run: all nulls)."""
    b = _latency_batch(m)
    values = [
        {column: m.get(key.format(safe)) for column, key in DOMAIN_METRICS.items()}
        | {"latency_ratio": _domain_latency(m, safe, b)}
        for safe in names
    ]
    rows = [
        {"kind": kind, "run_id": run_id, "number": number, "seed": seed, "domain": name} | v
        for name, v in zip(names.values(), values)
        if any(x is not None for x in v.values())
    ]
    layers = [
        {"run_id": run_id, "domain": names[hit[1]], "position": int(hit[2]), "sparsity": value}
        for key, value in m.items()
        if (hit := _LAYER_KEY.match(key)) and hit[1] in names
    ]
    return rows, layers


def discover_domains(runs: list) -> list[str]:
    """Domain names from metric keys, for studies that did not store their domain list (made
    before the driver stored it, so before per-domain values could go to an artifact)."""
    return sorted(
        {k[len("val/auc/") :] for r in runs for k in r.data.metrics if k.startswith("val/auc/")}
    )


def read_runs(uri: str, experiment: str, domains: list[str] | None) -> RunTables:
    """Every trial, re-evaluation and reference run of one study's MLflow experiment."""
    out = RunTables()
    if _local_store_missing(uri):
        out.warnings.append(f"MLflow store {uri} not found: per-domain results are missing")
        return out
    from mlflow.tracking import MlflowClient  # heavy import: only when there is a store

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        out.warnings.append(f"MLflow experiment {experiment!r} not found in {uri}")
        return out
    out.client = client
    found = {kind: search_runs(client, exp.experiment_id, kind) for kind in RUN_KINDS}
    names = domains or discover_domains(found["trial"] + found["reference"])
    safe_names = {safe_name(d): d for d in names}
    rows, domain_rows, layer_rows = [], [], []
    for kind, runs in found.items():
        for run in runs:
            out.handles[run.info.run_id] = run
            tags, m = run.data.tags, run.data.metrics | domain_artifact_metrics(out, run)
            number, seed = _int_tag(tags, "trial_number"), _int_tag(tags, "seed")
            rows.append(
                {"kind": kind, "run_id": run.info.run_id, "status": run.info.status}
                | {"number": number, "seed": seed, "start_ms": run.info.start_time}
                | {"method": tags.get("method", "dense" if kind == "reference" else None)}
                | {column: m.get(key) for column, key in RUN_METRICS.items()}
            )
            d_rows, l_rows = _domain_rows(kind, run.info.run_id, m, number, seed, safe_names)
            domain_rows += d_rows
            layer_rows += l_rows
    out.runs = pl.DataFrame(rows, schema=RUN_SCHEMA)
    out.domains = pl.DataFrame(domain_rows, schema=DOMAIN_SCHEMA)
    out.layers = pl.DataFrame(layer_rows, schema=LAYER_SCHEMA)
    return out


def domain_artifact_metrics(tables: RunTables, run) -> dict[str, float]:
    """The per-domain values a finished run with many domains logged as an artifact instead
    of metrics (store.tracking.Tracker.log_run_metrics), under their metric keys; {} for
    other runs. A file that cannot be read is a warning of the tables, not an error: the run's
    domains have no rows."""
    name = run.data.tags.get(DOMAIN_METRICS_TAG)
    if not name or run.info.status != "FINISHED":
        return {}
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="report-artifacts-") as tmp:
        path = artifact_file(tables, run_id, name, Path(tmp))
        try:
            if path is None:
                raise FileNotFoundError(name)
            frame = pl.read_parquet(path)
        except Exception as err:  # a damaged file must not stop the report
            tables.warnings.append(
                f"run {run_id}: its per-domain values ({name}) cannot be read"
                f" ({type(err).__name__}: {err}); its domains are left out"
            )
            return {}
    return dict(zip(frame["key"].to_list(), frame["value"].to_list()))


def artifact_file(tables: RunTables, run_id: str, name: str, scratch: Path) -> Path | None:
    """Local path of one artifact: read in place from a file store, else downloaded."""
    run = tables.handles.get(run_id)
    if run is None or tables.client is None:
        return None
    uri = run.info.artifact_uri
    if uri.startswith("file:"):
        path = Path(unquote(urlparse(uri).path)) / name
        return path if path.is_file() else None
    try:
        return Path(tables.client.download_artifacts(run_id, name, str(scratch)))
    except Exception as err:  # a missing artifact in a remote store: the report goes on without it
        log.warning("run %s: cannot read artifact %s (%s)", run_id, name, err)
        return None


def read_artifact_tables(
    tables: RunTables, run_ids: list[str], name: str
) -> dict[str, pl.DataFrame]:
    """``name`` (csv or parquet) of each run that has it, keyed by run id."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="report-artifacts-") as tmp:
        for run_id in run_ids:
            path = artifact_file(tables, run_id, name, Path(tmp) / run_id)
            if path is None:
                continue
            out[run_id] = pl.read_parquet(path) if name.endswith(".parquet") else pl.read_csv(path)
    return out
