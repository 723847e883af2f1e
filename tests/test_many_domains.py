"""Many domains: per-domain metrics reach MLflow in batches, or above
``tracking.domain_metrics_max`` domains as one artifact the report reads back; the report's
domain picker table (results.tables) holds every domain, its sets and the means the page's
script redraws."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.report.sections import picker_options
from adasparse_lab.results.runs import (
    RunTables,
    artifact_file,
    domain_artifact_metrics,
    read_runs,
)
from adasparse_lab.results.tables import domain_picker_table, picker_means
from adasparse_lab.run.build import build_components
from adasparse_lab.run.fit import EpochRecord
from adasparse_lab.run.outputs import epoch_logger
from adasparse_lab.store.tracking import (
    DOMAIN_METRICS_FILE,
    DOMAIN_METRICS_TAG,
    MAX_METRICS_PER_BATCH,
    Tracker,
    domain_keys,
)
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, REAL_OVERRIDES, SIX_DOMAINS, TINY_RUN


class CountingClient:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def log_batch(self, run_id, metrics=(), params=()):
        self.batches.append(len(metrics))


def test_an_epochs_per_domain_metrics_are_logged_in_batches():
    tracker = Tracker.__new__(Tracker)  # no MLflow store: count what would be sent
    tracker.client = CountingClient()
    n_domains = 1000
    val = {f"val/{m}/d{k:04d}": 0.5 for k in range(n_domains) for m in ("auc", "logloss")}
    val |= {"val/auc": 0.5, "val/sparsity/l1": 0.2, "val/flops/ratio": 0.5, "val/flops/mean": 9}
    # Per domain and epoch, only AUC and log loss: the rest stays in metrics.json's history.
    oracle = {f"val/oracle_auc/d{k:04d}": 0.7 for k in range(n_domains)}
    oracle |= {f"val/sparsity/d{k:04d}/l{i}": 0.1 for k in range(n_domains) for i in (1, 2)}
    oracle |= {f"val/flops{r}/d{k:04d}": 0.1 for k in range(n_domains) for r in ("", "_ratio")}
    record = EpochRecord(1, 10, 0.5, 0.0, 1e4, 0.1, 1.0, (0.1, 0.2), True, val | oracle)
    epoch_logger(tracker, "run")(record)
    total = len(val) + 7  # the train metrics beside the per-domain ones
    assert sum(tracker.client.batches) == total
    assert len(tracker.client.batches) == math.ceil(total / MAX_METRICS_PER_BATCH) == 3


def _tables(n: int = 30):
    domains = pl.DataFrame(
        {
            "study": ["s"] * n,
            "domain": [f"d{k:02d}" for k in range(n)],
            "group": [k % 3 for k in range(n)],
            "train_rows": [1000 - 10 * k for k in range(n)],
        }
    )
    rows = [
        {"study": "s", "number": t, "method": "m" if t else "dense-ish", "domain": f"d{k:02d}",
         "val_auc": 0.6 + 0.01 * t + 0.001 * k, "flops_ratio": 1.0 - 0.1 * t}
        for t in range(3)
        for k in range(n)
    ]  # fmt: skip
    ref = pl.DataFrame(
        {"study": "s", "domain": [f"d{k:02d}" for k in range(n)], "val_auc": 0.65,
         "flops_ratio": 1.0}
    )  # fmt: skip
    return pl.DataFrame(rows), domains, ref


def test_picker_table_holds_every_domain_by_size_and_its_sets():
    points, domains, ref = _tables(30)
    table = domain_picker_table(points.sample(fraction=1.0, seed=1), domains, ref)
    assert table["domains"] == [f"d{k:02d}" for k in range(30)]  # largest first
    assert table["number"] == [0, 1, 2] and table["k"] == [5, 10, 25]
    assert table["groups"] == {str(g): list(range(g, 30, 3)) for g in range(3)}
    assert table["y"][7][2] == round(0.6 + 0.02 + 0.007, 4)
    means = picker_means(table, [0, 1, 2, 3])  # the 4 largest
    assert means["y"] == [round(0.6 + 0.01 * t + 0.0015, 4) for t in range(3)]
    assert means["ref_y"] == [0.65] and means["x"] == [1.0, 0.9, 0.8]
    options = dict(picker_options(table))
    assert len(options["each domain (30, largest first)"]) == 30
    assert ("smallest:5", "5 smallest domains") in options["largest / smallest"]
    assert [v for v, _ in options["true groups (synthetic data)"]] == [
        "group:0",
        "group:1",
        "group:2",
    ]


class RecordingClient(CountingClient):
    def __init__(self) -> None:
        super().__init__()
        self.logged: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.calls: list[str] = []  # the order of artifact, tag and metrics

    def log_batch(self, run_id, metrics=(), params=()):
        super().log_batch(run_id, metrics, params)
        self.logged |= {m.key: m.value for m in metrics}
        self.calls.append("metrics")

    def set_tag(self, run_id, key, value):
        self.tags[key] = value
        self.calls.append("tag")

    def log_artifact(self, run_id, path):
        self.calls.append(f"artifact {Path(path).name}")


def _recording_tracker(limit: int) -> Tracker:
    tracker = Tracker.__new__(Tracker)  # no MLflow store: record what would be sent
    tracker.client = RecordingClient()
    tracker.domain_metrics_max = limit
    return tracker


# A safe name may hold "/", look like a number, or be called like a metric or an aggregate.
DOMAINS = ["d1", "a/b", "1", "auc", "ratio", "overall", "l1", "dense", "network", "b256"]
FINAL = {
    "val/mean_domain_auc": 0.7, "val/auc": 0.71, "val/gauc": 0.6, "val/sparsity/overall": 0.3,
    "val/sparsity/l1": 0.2, "val/flops/ratio": 0.4, "val/flops/dense": 9.0,
    "val/flops/mean": 3.0, "val/latency/ratio": 0.5, "val/latency/dense_b256": 2.0,
    "val/latency/ratio_b256": 0.5, "params": 1e4, "params/network": 1e3, "best_epoch": 1.0,
    "test/auc/1x": 0.5,  # '1x' is no domain
}  # fmt: skip
PER_DOMAIN = {
    f"{split}/{key}": 0.25
    for d in DOMAINS
    for split in ("val", "test")
    for key in (
        f"auc/{d}", f"oracle_auc/{d}", f"sparsity/{d}/l1", f"sparsity/{d}/overall",
        f"flops_ratio/{d}", f"latency/b256/{d}",
    )
} | {f"val/flops/{d}": 5.0 for d in DOMAINS if d not in ("ratio", "dense")} | {
    f"params/{d}": 100.0 for d in DOMAINS if d != "network"
}  # fmt: skip


def test_domain_keys_are_those_holding_one_domains_value():
    assert domain_keys(FINAL | PER_DOMAIN, DOMAINS) == set(PER_DOMAIN)


def test_above_the_limit_each_domains_values_go_to_one_artifact(tmp_path):
    tracker = _recording_tracker(limit=3)  # 10 domains
    undefined = {"val/auc/d1": math.nan, "val/gauc": math.nan}  # e.g. a single-class domain
    tracker.log_run_metrics("run", FINAL | PER_DOMAIN | undefined, DOMAINS, tmp_path)
    # Only the aggregates are MLflow metrics; an undefined value is left out on both sides, as
    # MLflow metrics leave it out (the report reads a missing value as null, not NaN).
    assert tracker.client.logged == {k: v for k, v in FINAL.items() if k != "val/gauc"}
    assert tracker.client.tags == {DOMAIN_METRICS_TAG: DOMAIN_METRICS_FILE}
    # The file is logged before the tag names it: a tagged run has its file.
    assert tracker.client.calls == [f"artifact {DOMAIN_METRICS_FILE}", "tag", "metrics"]
    table = pl.read_parquet(tmp_path / DOMAIN_METRICS_FILE)
    assert dict(zip(table["key"], table["value"])) == {
        k: v for k, v in PER_DOMAIN.items() if k != "val/auc/d1"
    }


def test_up_to_the_limit_every_value_is_a_metric(tmp_path):
    tracker = _recording_tracker(limit=len(DOMAINS))
    tracker.log_run_metrics("run", FINAL | PER_DOMAIN, DOMAINS, tmp_path)
    assert tracker.client.logged == FINAL | PER_DOMAIN and tracker.client.tags == {}
    assert not (tmp_path / DOMAIN_METRICS_FILE).exists()


@dataclass
class _Info:
    run_id: str
    status: str
    artifact_uri: str


@dataclass
class _Data:
    tags: dict


@dataclass
class _Run:
    info: _Info
    data: _Data


def test_a_damaged_or_missing_domain_artifact_is_a_warning_not_an_error(tmp_path):
    pl.DataFrame({"key": ["val/auc/d1"], "value": [0.6]}).write_parquet(tmp_path / "good.parquet")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut short")
    tables = RunTables(client=object())

    def metrics(name, status="FINISHED"):
        run = _Run(_Info(name, status, tmp_path.as_uri()), _Data({DOMAIN_METRICS_TAG: name}))
        tables.handles[name] = run
        return domain_artifact_metrics(tables, run)

    assert metrics("good.parquet") == {"val/auc/d1": 0.6}
    assert metrics("good.parquet", status="KILLED") == {}  # only finished runs are read
    assert tables.warnings == []
    assert metrics("cut.parquet") == {} and metrics("gone.parquet") == {}
    assert len(tables.warnings) == 2
    assert (
        "run cut.parquet: its per-domain values (cut.parquet) cannot be read" in tables.warnings[0]
    )
    assert "FileNotFoundError" in tables.warnings[1]


def test_above_the_limit_an_epoch_logs_only_aggregates():
    tracker = _recording_tracker(limit=3)
    val = {"val/mean_domain_auc": 0.7, "val/sparsity/l1": 0.2, "val/flops/ratio": 0.5}
    domains = {f"val/{m}/{d}": 0.5 for d in DOMAINS for m in ("auc", "logloss")}
    record = EpochRecord(1, 10, 0.5, 0.0, 1e4, 0.1, 1.0, (0.1, 0.2), True, val | domains)
    epoch_logger(tracker, "run", tracker.domains_as_metrics(len(DOMAINS)))(record)
    assert {k for k in tracker.client.logged if k.startswith("epoch/val/")} == {
        f"epoch/{k}" for k in val
    }


@pytest.mark.parametrize("value", [-1, "many", True, 2.5])
def test_a_bad_domain_metrics_max_fails_before_the_data_naming_the_key(make_cfg, value):
    cfg = make_cfg("tracking=mlflow")
    cfg.tracking.domain_metrics_max = value
    with pytest.raises(ConfigError, match=r"tracking\.domain_metrics_max="):
        build_components(cfg)


@pytest.mark.slow
def test_a_study_above_the_limit_reads_back_every_domains_values(tmp_path):
    """A real study on 6 domains with tracking.domain_metrics_max=2: MLflow holds no per-domain
    metric, and the report's tables (results.runs) read each run's per-domain values back from
    its artifact: the values of the run's own metrics.json."""
    overrides = [
        *REAL_OVERRIDES[:1], "study.name=many", "study.n_trials=2", "study.reeval.max_trials=1",
        "study.reeval.seeds=[1]", "study.log_models=none", "tracking.domain_metrics_max=2",
        "pruner=fusion", *SIX_DOMAINS, *TINY_RUN, f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports", f"paths.cache={tmp_path}/cache",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    names = [d["domain"] for d in outcome.study.user_attrs["domains"]]
    tables = read_runs(outcome.tracker.uri, "many", names)
    finished = tables.runs.filter(pl.col("status") == "FINISHED")
    assert set(finished["kind"]) == {"trial", "reeval", "reference"}
    dense = set(finished.filter(pl.col("kind") == "reference")["run_id"])
    for run_id in finished["run_id"]:
        metrics = tables.handles[run_id].data.metrics
        assert "val/mean_domain_auc" in metrics and not domain_keys(metrics, names)
        with_history = tables.client.get_metric_history(run_id, "epoch/val/mean_domain_auc")
        assert len(with_history) == 1  # one epoch; no per-domain epoch metric was logged
        path = artifact_file(tables, run_id, "metrics.json", tmp_path / run_id)
        own = json.loads(path.read_text())["metrics"]
        rows = tables.domains.filter(pl.col("run_id") == run_id).sort("domain")
        assert rows["domain"].to_list() == sorted(names)
        for row in rows.iter_rows(named=True):
            d = safe_name(row["domain"])
            assert row["val_auc"] == own[f"val/auc/{d}"] and row["test_auc"] == own[f"test/auc/{d}"]
            assert row["sparsity"] == own.get(f"val/sparsity/{d}/overall")  # None: dense
            assert row["flops_ratio"] == own[f"val/flops_ratio/{d}"]
        layers = tables.layers.filter(pl.col("run_id") == run_id)
        expected = {k for k in own if re.match(r"val/sparsity/.+/l\d+$", k)}
        assert layers.height == len(expected)
        assert len(expected) == (0 if run_id in dense else 2 * len(names))  # two masked layers


@pytest.mark.slow  # MLflow's sqlite store: ~10 s
def test_a_single_run_above_the_limit_logs_its_domains_in_one_artifact(make_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    from adasparse_lab.train import run

    cfg = make_cfg("tracking=mlflow", "tracking.domain_metrics_max=2")  # 12 synthetic domains
    metrics = run(cfg, tmp_path / "out")
    names = [
        d["domain"] for d in json.loads((tmp_path / "out" / "metrics.json").read_text())["domains"]
    ]
    client = MlflowClient(cfg.tracking.uri)
    (logged,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert logged.data.tags[DOMAIN_METRICS_TAG] == DOMAIN_METRICS_FILE and len(names) == 12
    per_domain = domain_keys(metrics, names)
    defined = {k: v for k, v in metrics.items() if v == v}
    assert len(per_domain) > 12 * 10  # AUC, log loss, oracle, FLOPs, sparsity... per split
    final = {k: v for k, v in logged.data.metrics.items() if not k.startswith("epoch/")}
    assert final == {k: v for k, v in defined.items() if k not in per_domain}
    aggregates = ("val/mean_domain_auc", "val/flops/ratio", "val/sparsity/overall", "params")
    assert all(final[k] == pytest.approx(metrics[k]) for k in (*aggregates, "params/network"))
    assert not any(k.startswith(("val/auc/", "test/auc/", "params/d")) for k in final)
    path = client.download_artifacts(logged.info.run_id, DOMAIN_METRICS_FILE, str(tmp_path))
    table = pl.read_parquet(path)
    assert dict(zip(table["key"], table["value"])) == {
        k: v for k, v in defined.items() if k in per_domain
    }
    history = client.get_metric_history(logged.info.run_id, "epoch/val/auc")
    assert len(history) == cfg.train.epochs  # the epochs' aggregates only
    assert not any(k.startswith("epoch/val/auc/") for k in logged.data.metrics)
