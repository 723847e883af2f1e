"""Many domains: per-domain metrics reach MLflow in batches, or above
``tracking.domain_metrics_max`` domains as one artifact the report reads back; the report's
domain picker table (results.tables) holds every domain, its sets and the means the page's
script redraws."""

from __future__ import annotations

import json
import math
import re

import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.report.sections import picker_options
from adasparse_lab.results.runs import artifact_file, read_runs
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

    def log_batch(self, run_id, metrics=(), params=()):
        super().log_batch(run_id, metrics, params)
        self.logged |= {m.key: m.value for m in metrics}

    def set_tag(self, run_id, key, value):
        self.tags[key] = value


def _recording_tracker(limit: int) -> Tracker:
    tracker = Tracker.__new__(Tracker)  # no MLflow store: record what would be sent
    tracker.client = RecordingClient()
    tracker.domain_metrics_max = limit
    return tracker


DOMAINS = [
    "d1",
    "d2",
    "a/b",
    "1",
    "auc",
]  # a safe name may hold "/", look like a number or a metric
FINAL = {
    "val/mean_domain_auc": 0.7, "val/auc": 0.71, "val/sparsity/overall": 0.3,
    "val/sparsity/l1": 0.2, "val/flops/ratio": 0.4, "val/latency/dense_b256": 2.0,
    "best_epoch": 1.0, "test/auc/1x": 0.5,  # '1x' is no domain
}  # fmt: skip
PER_DOMAIN = {
    f"{split}/{key}": 0.25
    for d in DOMAINS
    for split in ("val", "test")
    for key in (f"auc/{d}", f"sparsity/{d}/l1", f"flops_ratio/{d}", f"latency/b256/{d}")
} | {f"params/{d}": 100.0 for d in DOMAINS}


def test_domain_keys_are_those_holding_one_domains_value():
    assert domain_keys(FINAL | PER_DOMAIN, DOMAINS) == set(PER_DOMAIN)


def test_above_the_limit_each_domains_values_go_to_one_artifact(tmp_path):
    tracker = _recording_tracker(limit=3)  # 5 domains
    undefined = {"val/auc/d2": math.nan, "val/gauc": math.nan}  # e.g. a single-class domain
    files = tracker.log_run_metrics("run", FINAL | PER_DOMAIN | undefined, DOMAINS, tmp_path)
    assert files == [tmp_path / DOMAIN_METRICS_FILE]
    # Only the aggregates are MLflow metrics; an undefined value is left out on both sides, as
    # MLflow metrics leave it out (the report reads a missing value as null, not NaN).
    assert tracker.client.logged == FINAL
    assert tracker.client.tags == {DOMAIN_METRICS_TAG: DOMAIN_METRICS_FILE}
    table = pl.read_parquet(files[0])
    assert dict(zip(table["key"], table["value"])) == {
        k: v for k, v in PER_DOMAIN.items() if k != "val/auc/d2"
    }


def test_up_to_the_limit_every_value_is_a_metric(tmp_path):
    tracker = _recording_tracker(limit=5)
    assert tracker.log_run_metrics("run", FINAL | PER_DOMAIN, DOMAINS, tmp_path) == []
    assert tracker.client.logged == FINAL | PER_DOMAIN and tracker.client.tags == {}
    assert not (tmp_path / DOMAIN_METRICS_FILE).exists()


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
    path = client.download_artifacts(logged.info.run_id, DOMAIN_METRICS_FILE, str(tmp_path))
    table = pl.read_parquet(path)
    assert dict(zip(table["key"], table["value"])) == {
        k: v for k, v in defined.items() if k in per_domain
    }
    history = client.get_metric_history(logged.info.run_id, "epoch/val/auc")
    assert len(history) == cfg.train.epochs  # the epochs' aggregates only
    assert not any(k.startswith("epoch/val/auc/") for k in logged.data.metrics)
