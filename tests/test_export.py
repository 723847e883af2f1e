"""Models out: serving bundles of a real study's trials (the driver's `real_study`), scored
through the bundle, the predict command and MLflow's pyfunc loader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
import torch

from adasparse_lab.errors import ConfigError
from adasparse_lab.export import Bundle
from adasparse_lab.export.__main__ import main as export_main
from adasparse_lab.export.build import export_trial, model_logits
from adasparse_lab.export.bundle import load_exported
from adasparse_lab.export.predict import main as predict_main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exports(real_study, tmp_path_factory):
    """Every COMPLETE trial of the real study exported (no MLflow logging), by trial number."""
    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    numbers = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    out = tmp_path_factory.mktemp("exports")
    return {
        n: export_trial(real_study.name, n, out / str(n), real_study.root, log_model=False)
        for n in numbers
    }


def test_bundle_equals_trained_model_for_every_domain(exports):
    methods = set()
    for result in exports.values():
        trial, bundle = result.trial, Bundle(result.bundle)
        methods.add(result.trial.cfg.pruner.get("method") or trial.cfg.pruner.get("inputs"))
        test = trial.data.splits["test"]
        served = bundle.logits(bundle.encode(trial.raw.frames["test"]))
        trained = model_logits(trial.model, test.cat, test.dense)
        for k, name in enumerate(trial.data.domain_names):
            rows = test.domain == k
            assert rows.any(), name
            torch.testing.assert_close(served[rows], trained[rows], rtol=1e-5, atol=1e-5)
        assert max(result.check.max_abs_diff.values()) < 1e-5
    assert methods == {"hidden+domain", "domain", "magnitude"}  # masked and compacted paths


def test_trials_record_the_prepared_data_they_trained_on(real_study, exports):
    import mlflow

    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    client = mlflow.MlflowClient(real_study.mlflow_uri)
    for number, result in exports.items():
        key = result.trial.data.key
        assert key == result.trial.data.cache_path.name  # the store's folder under paths.cache
        assert study.trials[number].user_attrs["data_key"] == key
        assert client.get_run(result.trial.run_id).data.tags["data_key"] == key


def test_static_structures_are_served_by_compacted_nets(exports):
    for result in exports.values():
        manifest = Bundle(result.bundle).manifest
        static = result.trial.cfg.pruner.get("method") or result.trial.cfg.pruner.inputs == "domain"
        names = result.trial.data.domain_names
        assert set(manifest["nets"]) == (set(names) if static else set()), result.trial.number
        if static:  # the compacted net is physically smaller than the masked model
            net = load_exported(result.bundle / manifest["nets"][names[0]])
            whole = load_exported(result.bundle / manifest["model"])
            assert sum(p.numel() for p in net.parameters()) < sum(
                p.numel() for p in whole.parameters()
            )


def test_test_auc_through_the_bundle_is_the_studys(exports):
    for result in exports.values():
        stored = result.trial.metrics["test/auc"]
        assert 0.0 < stored < 1.0  # a real AUC (the tiny study's paper-form trial barely learns)
        assert result.check.bundle_auc == pytest.approx(stored, abs=1e-6)
        assert result.check.stored_auc == stored
    assert max(r.trial.metrics["test/auc"] for r in exports.values()) > 0.55  # not all noise


def test_unknown_categories_and_missing_values_encode_like_training(exports):
    result = next(iter(exports.values()))
    bundle, schema = Bundle(result.bundle), result.trial.data.schema
    raw = result.trial.raw.frames["test"].head(50)
    col = next(c for c in schema.categorical if c != schema.domain)
    j = schema.categorical.index(col)
    unseen = "never-seen" if raw.schema[col] == pl.String else 10**12
    changed = raw.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit(unseen)).otherwise(None).alias(col)
    )
    if schema.dense:
        changed = changed.with_columns(pl.lit(None, dtype=pl.Float64).alias(schema.dense[0]))
    enc = bundle.encode(changed)
    assert (enc.cat[:, j] == 0).all()  # unseen and null -> the OOV code, as in preparation
    if schema.dense:
        assert (enc.dense[:, 0] == 0).all()  # missing dense -> 0 (the train mean)
    expected = result.trial.data.splits["test"].cat[:50].clone()
    expected[:, j] = 0
    assert torch.equal(enc.cat, expected)
    assert np.allclose(
        bundle.predict(changed),
        torch.sigmoid(model_logits(result.trial.model, enc.cat, enc.dense)).numpy(),
        atol=1e-6,
    )


def test_predict_command_scores_a_csv_and_a_parquet(exports, tmp_path):
    result = next(iter(exports.values()))
    raw = result.trial.raw.frames["test"]
    expected = Bundle(result.bundle).predict(raw)
    for suffix in (".csv", ".parquet"):
        rows = tmp_path / f"rows{suffix}"
        raw.drop(result.trial.data.schema.label).write_csv(
            rows
        ) if suffix == ".csv" else raw.write_parquet(rows)
        out = tmp_path / f"scores{suffix}.parquet"
        assert predict_main([str(result.bundle), str(rows), "-o", str(out)]) == 0
        assert np.allclose(pl.read_parquet(out).get_column("score").to_numpy(), expected, atol=1e-6)


def test_missing_study_and_bad_trial_are_clear_errors(real_study, capsys):
    studies = f"studies={real_study.root}"
    assert export_main(["study=nope", "trial=0", studies]) == 2
    assert "study 'nope' not found" in capsys.readouterr().err
    assert export_main([f"study={real_study.name}", "trial=99", studies]) == 2
    err = capsys.readouterr().err
    assert "no COMPLETE trial 99" in err and "COMPLETE trials: [" in err
    failed = 1  # REAL_TRIALS[1] is the injected failure
    assert export_main([f"study={real_study.name}", f"trial={failed}", studies]) == 2
    assert "it is FAIL" in capsys.readouterr().err
    assert export_main([f"study={real_study.name}", "trial=x", studies]) == 2
    assert "give a trial number or best" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no COMPLETE trial 99"):
        export_trial(real_study.name, 99, None, real_study.root)


def test_mlflow_pyfunc_scores_like_the_bundle_and_registers(real_study, tmp_path):
    import mlflow

    front = optuna.load_study(study_name=real_study.name, storage=real_study.storage).best_trials
    number = front[0].number
    result = export_trial(
        real_study.name, number, tmp_path / "b", real_study.root, register="real-pyfunc-test"
    )
    raw = result.trial.raw.frames["test"]
    expected = Bundle(result.bundle).predict(raw)
    mlflow.set_tracking_uri(real_study.mlflow_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    got = np.asarray(model.predict(raw.to_pandas()))
    assert np.allclose(got, expected, atol=1e-6)
    inputs = [c["name"] for c in model.metadata.get_input_schema().to_dict()]
    assert inputs == Bundle(result.bundle).feature_columns  # the raw columns, label not needed
    assert model.metadata.run_id == result.trial.run_id
    # the torch module in the pytorch flavour, on encoded rows: the trained model's logits
    from adasparse_lab.export.pyfunc import encoded_frame

    logged = {
        m.name: m.model_uri
        for m in mlflow.search_logged_models(
            experiment_ids=[mlflow.get_run(result.trial.run_id).info.experiment_id],
            filter_string=f"source_run_id = '{result.trial.run_id}'",
            output_format="list",
        )
    }
    assert logged["model"] == result.model_uri
    torch_uri = logged["torch_model"]
    encoded = Bundle(result.bundle).encode(raw)
    torch_model = mlflow.pyfunc.load_model(torch_uri)
    assert torch_model.metadata.flavors.keys() >= {"pytorch", "python_function"}
    test = result.trial.data.splits["test"]
    assert np.allclose(
        np.asarray(torch_model.predict(encoded_frame(encoded))).ravel(),
        model_logits(result.trial.model, test.cat, test.dense).numpy(),
        atol=1e-5,
    )
    assert [c["name"] for c in torch_model.metadata.get_input_schema().to_dict()][:2] == [
        "c0",
        "c1",
    ]
    registered = mlflow.pyfunc.load_model("models:/real-pyfunc-test/1")
    assert np.allclose(np.asarray(registered.predict(raw.head(20).to_pandas())), expected[:20])


def recipe_lines(doc: Path, heading: str = "## Serve a front model") -> list[str]:
    """The first ```bash block under ``heading`` in ``doc``, one command per line."""
    section = doc.read_text().split(heading, 1)[-1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"{doc} has no bash block under {heading!r}"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_serving_recipe_runs_as_written(real_study):
    """The documented copy-paste recipe (docs/serving.md), on the real study instead of a fresh quick one (the
    sweep line is what the fixture already ran), from the folder holding ``studies/``."""
    lines = recipe_lines(ROOT / "docs" / "serving.md", "# Serve a front model")
    assert lines[0].startswith("python -m adasparse_lab.sweep +study=quick")
    cwd = real_study.root.parent
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    outputs = []
    for line in lines[1:]:
        cmd = line.replace("quick", real_study.name)
        proc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    bundle = Bundle(real_study.root / real_study.name / "serving")
    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    assert bundle.manifest["trial"] == max(study.best_trials, key=lambda t: t.values[0]).number
    assert "through the bundle" in outputs[0]
    example = pl.read_parquet(bundle.path / "example.parquet")
    scores = pl.read_parquet(cwd / "scores.parquet").get_column("score").to_numpy()
    assert np.allclose(scores, bundle.predict(example), atol=1e-6)
    printed = np.array([float(v) for v in re.findall(r"[0-9.]+(?:e-?\d+)?", outputs[-1])])
    assert np.allclose(printed, scores[:5], atol=1e-4)


def test_study_end_logs_each_front_trials_model_once(real_study, monkeypatch):
    import mlflow

    from adasparse_lab.export import build as export_build
    from adasparse_lab.export.trial import front_numbers

    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    uris = export_build.log_front_models(real_study.name, real_study.root, real_study.storage)
    assert sorted(uris) == sorted(front_numbers(study)) and uris
    client = mlflow.MlflowClient(real_study.mlflow_uri)
    for number, uri in uris.items():
        run = client.get_run(study.trials[number].user_attrs["mlflow_run_id"])
        assert run.data.tags[export_build.MODEL_TAG] == uri
    number, uri = next(iter(uris.items()))
    bundle = Bundle(real_study.root / real_study.name / "exports" / f"trial-{number}")
    rows = pl.read_parquet(bundle.path / "example.parquet")
    mlflow.set_tracking_uri(real_study.mlflow_uri)
    got = mlflow.pyfunc.load_model(uri).predict(rows.to_pandas())
    assert np.allclose(np.asarray(got), bundle.predict(rows), atol=1e-6)

    def no_second_export(*args, **kwargs):
        raise AssertionError("a front trial with a logged model was exported again")

    monkeypatch.setattr(export_build, "export_trial", no_second_export)  # a resumed study's end
    assert export_build.log_front_models(real_study.name, real_study.root) == uris


def test_log_models_setting_is_checked(make_cfg):
    from adasparse_lab.study.settings import parse_settings

    assert parse_settings(make_cfg("+study=quick").study).log_models == "none"
    cfg = make_cfg("+study=sparsity")  # the main study logs its front's models
    assert parse_settings(cfg.study).log_models == "front"
    cfg.study.log_models = "all"
    with pytest.raises(ConfigError, match=r"study.log_models='all'"):
        parse_settings(cfg.study)
