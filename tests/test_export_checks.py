"""Exports that must not pass silently: a trial whose source files changed since training, a
bundle that disagrees with the trained model; zoo models (mmoe, star) served per domain; the
encoder is read from the prepared store (the one training used)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adasparse_lab.config import instantiate
from adasparse_lab.data.prepare import source_encoder
from adasparse_lab.errors import ConfigError
from adasparse_lab.export import Bundle
from adasparse_lab.export.build import export_stored, model_logits
from adasparse_lab.export.bundle import export_net
from adasparse_lab.export.trial import load_run
from adasparse_lab.models.base import Logits
from adasparse_lab.run.outputs import write_outputs
from adasparse_lab.run.pipeline import train_and_evaluate
from tests.conftest import FIXTURES
from tests.test_zoo import BASE, DATA, DENSE, SMALL, built

pytestmark = pytest.mark.slow


def trained_run(make_cfg, folder: Path, model: str = "mlp", data: str = "synthetic", extra=()):
    """A tiny run trained and written like a study trial's folder (config, weights, metrics)."""
    cfg = make_cfg(*BASE, *SMALL[model], *DENSE, *DATA[data], *extra, tiny=False)
    result = train_and_evaluate(cfg)
    write_outputs(folder, cfg, result)
    return cfg, result


def test_changed_source_file_is_refused(make_cfg, tmp_path):
    files = tmp_path / "douban"
    shutil.copytree(FIXTURES / "douban", files)
    extra = [f"data.source.root={files}"]
    cfg, result = trained_run(make_cfg, tmp_path / "run", data="douban", extra=extra)
    assert load_run(tmp_path / "run").data.key == result.data.key  # unchanged files: fine
    table = pl.read_csv(files / "douban.csv")
    table.head(table.height - 200).write_csv(files / "douban.csv")  # the source changed since
    with pytest.raises(ConfigError, match="trained on prepared data") as err:
        load_run(tmp_path / "run")
    assert result.data.key in str(err.value) and "export from the original files" in str(err.value)


def test_encoder_comes_from_the_prepared_store(make_cfg, tmp_path):
    from adasparse_lab.data.prepare import store_encoder

    cfg, result = trained_run(make_cfg, tmp_path / "run")
    schema = result.data.schema
    stored = store_encoder(result.data.cache_path, schema)
    fitted, _ = source_encoder(
        instantiate(cfg.data.source, "data.source"),
        schema,
        cfg.data.min_freq,
        cfg.data.dense_log1p,
    )
    assert stored is not None and schema.dense
    assert stored.vocabs.keys() == fitted.vocabs.keys()
    for col, vocab in fitted.vocabs.items():
        assert stored.vocabs[col].equals(vocab), col
    np.testing.assert_array_equal(stored.mean, fitted.mean)
    np.testing.assert_array_equal(stored.std, fitted.std)
    assert stored.dense_log1p == fitted.dense_log1p
    trial = load_run(tmp_path / "run")
    assert trial.encoder.vocabs[schema.domain].equals(fitted.vocabs[schema.domain])


def test_export_fails_when_the_bundle_disagrees(make_cfg, tmp_path):
    trained_run(make_cfg, tmp_path / "run")
    trial = load_run(tmp_path / "run")
    export_stored(trial, tmp_path / "ok")  # agrees: no error
    trial.metrics["test/auc"] += 0.01
    with pytest.raises(ConfigError, match="AUC"):
        export_stored(trial, tmp_path / "auc")
    trial = load_run(tmp_path / "run")
    test = trial.data.splits["test"]
    trial.data.splits["test"] = replace(test, cat=test.cat.flip(0), dense=test.dense.flip(0))
    with pytest.raises(ConfigError, match="max abs logit difference"):
        export_stored(trial, tmp_path / "logits")


@pytest.mark.parametrize("name", ["mmoe", "star", "shared_bottom", "ple", "apg"])
def test_zoo_model_bundle_equals_the_model_per_domain(make_cfg, tmp_path, name):
    trained_run(make_cfg, tmp_path / "run", name)
    trial = load_run(tmp_path / "run")
    result = export_stored(trial, tmp_path / "bundle")
    bundle = Bundle(result.bundle)
    assert set(bundle.manifest["nets"]) == set(trial.data.domain_names)
    test = trial.data.splits["test"]
    served = bundle.logits(bundle.encode(trial.raw.frames["test"]))
    trained = model_logits(trial.model, test.cat, test.dense)
    for k, domain in enumerate(trial.data.domain_names):
        rows = test.domain == k
        assert rows.any(), domain
        torch.testing.assert_close(served[rows], trained[rows], rtol=1e-5, atol=1e-5)
    assert result.check.bundle_auc == pytest.approx(trial.metrics["test/auc"], abs=1e-6)
    # a domain unseen in training (OOV code 0) is served like the model serves code 0
    cat = test.cat[:8].clone()
    cat[:, trial.data.schema.categorical.index(trial.data.schema.domain)] = 0
    rows = replace(bundle.encode(trial.raw.frames["test"].head(8)), cat=cat)
    rows = replace(rows, domain=torch.full((8,), -1))
    torch.testing.assert_close(
        bundle.logits(rows), model_logits(trial.model, cat, test.dense[:8]), rtol=1e-5, atol=1e-5
    )


def test_a_model_torch_export_cannot_trace_is_a_clear_error(make_cfg, tiny_data, tmp_path):
    model = built(make_cfg, tiny_data, "mmoe").eval()  # routes rows by bincount().tolist()
    train = tiny_data.splits["train"]
    example = (train.cat[:64], train.dense[:64])
    with pytest.raises(ConfigError, match=r"cannot export MMoEModel \(whole.pt2\)"):
        export_net(Logits(model), example, tmp_path / "whole.pt2")
    export_net(model.served(1), example, tmp_path / "route.pt2")  # one domain's fixed route
    assert (tmp_path / "route.pt2").is_file()
