"""A small real study written the way the sweep writes one (Optuna storage + MLflow runs and
artifacts), shared by the report tests; and tests of reading it back (report.collect)."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from adasparse_lab.experiment import build_data, epoch_logger, train_and_evaluate, write_outputs
from adasparse_lab.report.analysis import pareto_mask
from adasparse_lab.report.collect import collect
from adasparse_lab.tracking import Tracker, flatten

CONF = Path(__file__).resolve().parents[1] / "conf"
FLOAT = optuna.distributions.FloatDistribution
CAT = optuna.distributions.CategoricalDistribution
DISTRIBUTIONS = {
    "pruner": CAT(["fusion", "binarization", "scaling"]),
    "regularizer.lambda_end": FLOAT(0.1, 100.0, log=True),
    "schedule.r_min": FLOAT(0.05, 0.5),
    "train.lr": FLOAT(1e-4, 1e-2, log=True),
}


@dataclass
class StudySpec:
    """Size of the study; the defaults keep the whole fixture under ~15 s on 2 cores."""

    name: str = "tiny"
    n_rows: int = 6000
    n_domains: int = 6
    n_groups: int = 2
    size_ratio: float = 8.0
    epochs: int = 1
    hidden: list[int] = field(default_factory=lambda: [16, 8])
    embedding_dim: int = 4
    batch_size: int = 256
    seeds: tuple[int, ...] = (1, 2)  # re-evaluation seeds of the front trials
    # (pruner, inputs, r_min, lambda_end, lr) per completed trial
    trials: list[tuple] = field(
        default_factory=lambda: [
            ("fusion", "hidden+domain", 0.15, 10.0, 0.003),
            ("binarization", "domain", 0.35, 30.0, 0.003),
            ("scaling", "hidden+domain", 0.15, 1.0, 0.001),
        ]
    )


def demo_spec(n_trials: int = 14, seed: int = 0) -> StudySpec:
    """A larger study for looking at a report (docs/report.png), not for the test suite:
    12 domains, 100k rows, 3 epochs, random trials; a few minutes on 2 cores."""
    import random

    rng = random.Random(seed)
    trials = [
        (
            rng.choice(["fusion", "fusion", "binarization", "scaling"]),
            rng.choice(["hidden+domain", "domain"]),
            round(rng.uniform(0.05, 0.5), 2),
            round(10 ** rng.uniform(0, 2), 2),
            round(10 ** rng.uniform(-3.3, -2.5), 5),
        )
        for _ in range(n_trials)
    ]
    return StudySpec(
        name="demo",
        n_rows=100_000,
        n_domains=12,
        n_groups=3,
        size_ratio=50.0,
        epochs=3,
        hidden=[64, 32],
        embedding_dim=8,
        batch_size=1024,
        seeds=(1, 2),
        trials=trials,
    )


@dataclass
class BuiltStudy:
    name: str
    root: Path
    storage: str
    mlflow_uri: str
    n_complete: int
    reeval_numbers: list[int]


def _trial_overrides(form: str, inputs: str, r_min: float, lam: float, lr: float) -> list[str]:
    return [
        f"pruner={form}",
        f"pruner.inputs={inputs}",
        f"regularizer.lambda_end={lam}",
        f"schedule.r_min={r_min}",
        f"schedule.r_max={r_min + 0.1}",
        f"train.lr={lr}",
    ]


def _config(root: Path, spec: StudySpec, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        src = cfg.data.source
        src.n_rows, src.n_domains, src.n_groups = spec.n_rows, spec.n_domains, spec.n_groups
        src.size_ratio = spec.size_ratio
        cfg.train.epochs, cfg.train.batch_size, cfg.train.progress = (
            spec.epochs,
            spec.batch_size,
            False,
        )
        cfg.train.device = "cpu"
        cfg.model.hidden_dims, cfg.model.embedding_dim = list(spec.hidden), spec.embedding_dim
        cfg.paths.studies, cfg.paths.cache = str(root), str(root / "cache")
        cfg.tracking.uri = f"sqlite:///{root}/mlflow.db"
        cfg.tracking.artifact_root = str(root / "mlartifacts")
        cfg.experiment = spec.name
    return cfg


def _run(tracker: Tracker, parent: str, cfg: DictConfig, data, out: Path, name: str, tags: dict):
    run_id = tracker.start_run(name, parent, tags={k: str(v) for k, v in tags.items()})
    tracker.log_params(run_id, flatten(cfg))
    result = train_and_evaluate(cfg, data, on_epoch=epoch_logger(tracker, run_id))
    tracker.log_metrics(run_id, result.metrics, step=result.fit.best_epoch)
    tracker.log_artifacts(run_id, write_outputs(out, cfg, result)[:4])
    tracker.end_run(run_id)
    return run_id, result


def build_study(root: Path, spec: StudySpec | None = None) -> BuiltStudy:
    """Train the spec's runs for real and store them following the sweep's storage contract."""
    spec = spec or StudySpec()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    root.mkdir(parents=True, exist_ok=True)
    base = _config(root, spec, ["pruner=none"])
    data = build_data(base.data, base.paths.cache)
    tracker = Tracker(base.tracking.uri, base.tracking.artifact_root, spec.name)
    parent = tracker.start_run(spec.name, tags={"kind": "study"})
    storage = f"sqlite:///{root}/{spec.name}/optuna.db"
    (root / spec.name).mkdir(exist_ok=True)
    study = optuna.create_study(
        study_name=spec.name, storage=storage, directions=["maximize", "minimize"]
    )
    ref_id, ref = _run(
        tracker, parent, base, data, root / "runs/reference", "reference", {"kind": "reference"}
    )

    values = []
    for number, (form, inputs, r_min, lam, lr) in enumerate(spec.trials):
        params = {
            "pruner": form,
            "regularizer.lambda_end": lam,
            "schedule.r_min": r_min,
            "train.lr": lr,
        }
        cfg = _config(root, spec, _trial_overrides(form, inputs, r_min, lam, lr))
        run_id, result = _run(
            tracker,
            parent,
            cfg,
            data,
            root / f"runs/trial{number}",
            f"trial-{number}",
            {"kind": "trial", "trial_number": number},
        )
        v = [result.metrics["val/mean_domain_auc"], result.metrics["val/flops/ratio"]]
        values.append(v)
        study.add_trial(
            optuna.trial.create_trial(
                values=v,
                params=params,
                distributions=DISTRIBUTIONS,
                user_attrs={
                    "mlflow_run_id": run_id,
                    "pruner_form": form,
                    "pruner_inputs": inputs,
                    "band": [r_min, r_min + 0.1],
                    "duration_s": result.fit.seconds,
                },
            )
        )
    n = len(spec.trials)
    bad = {
        "pruner": "fusion",
        "regularizer.lambda_end": 1e2,
        "schedule.r_min": 0.5,
        "train.lr": 1e-2,
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=bad,
            distributions=DISTRIBUTIONS,
            user_attrs={
                "pruner_form": "fusion",
                "fail_reason": "NonFiniteLossError: non-finite training loss",
            },
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING,
            params=bad,
            distributions=DISTRIBUTIONS,
            user_attrs={"pruner_form": "fusion"},
        )
    )

    front = [i for i, on in enumerate(pareto_mask(values, ["maximize", "minimize"])) if on]
    for number in front:
        form, inputs, r_min, lam, lr = spec.trials[number]
        for seed in spec.seeds:
            cfg = _config(
                root, spec, [*_trial_overrides(form, inputs, r_min, lam, lr), f"seed={seed}"]
            )
            _run(
                tracker,
                parent,
                cfg,
                data,
                root / f"runs/reeval{number}-{seed}",
                f"reeval-{number}-{seed}",
                {"kind": "reeval", "trial_number": number, "seed": seed},
            )
    tracker.end_run(parent)
    attrs = {
        "objectives": [
            {"name": "val/mean_domain_auc", "direction": "maximize"},
            {"name": "val/flops/ratio", "direction": "minimize"},
        ],
        "mlflow_uri": base.tracking.uri,
        "mlflow_experiment": spec.name,
        "parent_run_id": parent,
        "reference_run_id": ref_id,
        "config": OmegaConf.to_yaml(base, resolve=True),
        "domains": ref.domains.rename({"train_pos_rate": "pos_rate"})
        .select("domain", "group", "train_rows", "pos_rate", "oracle_auc")
        .to_dicts(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "threads": 2,
            "torch": "test",
            "python": platform.python_version(),
        },
        "started_at": started,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return BuiltStudy(spec.name, root, storage, base.tracking.uri, n, front)


@pytest.fixture(scope="session")
def report_study(tmp_path_factory) -> BuiltStudy:
    """Built once per session, even when several modules import this fixture."""
    root = tmp_path_factory.getbasetemp() / "report-study"
    done = root / "built.txt"
    if done.is_file():
        storage, uri, n, front = done.read_text().split("\n")
        return BuiltStudy(
            "tiny", root, storage, uri, int(n), [int(x) for x in front.split(",") if x]
        )
    built = build_study(root)
    done.write_text(
        f"{built.storage}\n{built.mlflow_uri}\n{built.n_complete}\n"
        + ",".join(map(str, built.reeval_numbers))
    )
    return built


def test_collect_reads_every_table(report_study):
    data = collect([report_study.name], [report_study.storage])
    t = data.trials
    assert t.height == report_study.n_complete + 2
    assert t["state"].value_counts().sort("state").to_dicts() == [
        {"state": "COMPLETE", "count": 3},
        {"state": "FAIL", "count": 1},
        {"state": "RUNNING", "count": 1},
    ]
    done = t.filter(pl.col("state") == "COMPLETE")
    # Optuna values and MLflow metrics agree; every finished trial has its run and test AUC.
    assert done["run_id"].null_count() == 0 and done["test_auc"].null_count() == 0
    assert ((done["auc"] > 0.4) & (done["auc"] < 1.0)).all()
    assert (done["flops_ratio"] > 0).all()
    assert sorted(t.filter(pl.col("on_front"))["number"].to_list()) == sorted(
        report_study.reeval_numbers
    )
    assert {"param:pruner", "param:train.lr", "obj:val/flops/ratio"} <= set(t.columns)
    assert t.filter(pl.col("state") == "FAIL")["fail_reason"][0].startswith("NonFinite")

    assert data.domains.height == 6 and data.domains["train_rows"].is_sorted(descending=True)
    assert data.reference.height == 1 and data.reference["flops_ratio"][0] == pytest.approx(1.0)
    kinds = data.domain_metrics.group_by("kind").len().sort("kind").to_dicts()
    n_front = len(report_study.reeval_numbers)
    assert kinds == [
        {"kind": "reeval", "len": 6 * 2 * n_front},
        {"kind": "reference", "len": 6},
        {"kind": "trial", "len": 6 * 3},
    ]
    assert data.reeval.height == n_front and (data.reeval["n_seeds"] == 2).all()
    assert data.reeval_domains.height == 6 * n_front
    # Structure of front trials: one keep probability per domain and neuron of both layers.
    assert sorted(data.keep["number"].unique().to_list()) == sorted(report_study.reeval_numbers)
    per_trial = data.keep.group_by("number").len()["len"].to_list()
    assert set(per_trial) == {6 * (16 + 8)}
    assert data.layer_sparsity.height == 3 * 6 * 2
