"""Issue 22: a fit killed part-way goes on from its checkpoint (run/checkpoint.py) and ends with
the same weights and metrics as a fit that was never stopped (bit for bit on CPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from adasparse_lab.errors import ConfigError
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.run.checkpoint import Checkpointing
from adasparse_lab.run.fit import fit


class Killed(Exception):
    """Stands for SIGKILL inside one process: the fit stops where it is."""


def _fit(cfg, data, checkpoint: Checkpointing | None = None, **hooks):
    parts = build_components(cfg)
    torch.manual_seed(parts.settings.seed)
    model = build_model(cfg.model, data, parts.pruner)
    result = fit(
        model,
        data,
        parts.settings,
        parts.regularizer,
        parts.schedule,
        checkpoint=checkpoint,
        **hooks,
    )
    return model, result


def _same_run(a, b) -> None:
    (model_a, fit_a), (model_b, fit_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert fit_a.best_epoch == fit_b.best_epoch and fit_a.steps == fit_b.steps
    for ra, rb in zip(fit_a.history, fit_b.history, strict=True):
        timing = {"samples_per_s"}
        assert {k: v for k, v in dataclasses.asdict(ra).items() if k not in timing} == {
            k: v for k, v in dataclasses.asdict(rb).items() if k not in timing
        }


CONFIGS = {
    "fusion": ["pruner=fusion", "train.epochs=4", "train.patience=10"],
    "magnitude": ["pruner=magnitude", "schedule=agp", "train.epochs=3"],  # buffers, masks
    "dropout": ["pruner=none", "model.dropout=0.2", "train.epochs=3"],  # the global RNG
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_fit_killed_after_its_second_epoch_resumes_to_the_same_weights(
    name, make_cfg, tiny_data, tmp_path
):
    cfg = make_cfg("tracking=none", *CONFIGS[name])
    whole = _fit(cfg, tiny_data)
    path = tmp_path / "checkpoint.pt"

    def kill_after_second(record):
        if record.epoch == 3:  # epoch 2's end was saved; epoch 3 is lost with the kill
            raise Killed

    with pytest.raises(Killed):
        _fit(cfg, tiny_data, Checkpointing(path, "k"), on_epoch=kill_after_second)
    assert torch.load(path, weights_only=False)["epoch"] == 2
    seen = []
    resumed = _fit(cfg, tiny_data, Checkpointing(path, "k"), on_epoch=seen.append)
    _same_run(whole, resumed)
    assert [r.epoch for r in seen] == [r.epoch for r in whole[1].history]  # replayed, in order
    assert not path.exists()  # a finished fit leaves no checkpoint behind


def test_a_fit_killed_within_an_epoch_resumes_from_its_last_step_saved(
    make_cfg, tiny_data, tmp_path
):
    cfg = make_cfg("tracking=none", "pruner=fusion", "train.epochs=3", "train.batch_size=2048")
    whole = _fit(cfg, tiny_data)
    path = tmp_path / "checkpoint.pt"
    saves = []

    class Counting(Checkpointing):
        def save(self, state):
            saves.append((state["epoch"], state["within"] and state["within"]["steps"]))
            super().save(state)

    def kill_mid_second_epoch(rung):
        raise Killed  # at 45% of the budget: part-way through epoch 2

    with pytest.raises(Killed):
        _fit(
            cfg,
            tiny_data,
            Counting(path, "k", every_s=1e-9),  # a save after every step
            rungs=[0.45],
            on_rung=kill_mid_second_epoch,
        )
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 2 and saved["within"]["steps"] > 0  # within epoch 2
    assert (1, None) in saves  # epoch 1's end was saved too
    resumed = _fit(cfg, tiny_data, Checkpointing(path, "k", every_s=1e-9))
    _same_run(whole, resumed)


def test_a_checkpoint_of_another_configuration_is_not_resumed(make_cfg, tiny_data, tmp_path):
    cfg = make_cfg("tracking=none", "pruner=fusion", "train.epochs=3")
    path = tmp_path / "checkpoint.pt"

    def kill(record):
        if record.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        _fit(cfg, tiny_data, Checkpointing(path, "config-a"), on_epoch=kill)
    seen = []
    _fit(cfg, tiny_data, Checkpointing(path, "config-b"), on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3]  # trained from the start


def test_a_checkpoint_write_is_atomic(tmp_path):
    """A kill while a checkpoint is written leaves the previous one whole."""
    path = tmp_path / "checkpoint.pt"
    saver = Checkpointing(path, "k")
    saver.save({"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        saver.save({"epoch": 2, "x": Unpicklable()})
    assert saver.load()["epoch"] == 1


def test_a_bad_checkpoint_interval_fails_before_training(make_cfg):
    with pytest.raises(ConfigError, match="train.checkpoint_every_s=0"):
        build_components(make_cfg("tracking=none", "train.checkpoint_every_s=0"))


def test_a_run_writes_its_checkpoint_only_where_it_is_asked_to(make_cfg, tiny_data, tmp_path):
    from adasparse_lab.run.pipeline import train_and_evaluate

    cfg = make_cfg("tracking=none", "pruner=fusion")
    path = tmp_path / "run" / "checkpoint.pt"
    seen = []

    def watch(record):
        seen.append(path.exists())

    train_and_evaluate(cfg, tiny_data, on_epoch=watch, checkpoint=path)
    assert seen == [False, True] and not path.exists()  # saved after epoch 1, removed at the end
    assert not list(Path(tmp_path).glob("**/.checkpoint*"))  # no temporary file left


# One trial of the quick study, four epochs long enough to be killed in; no re-evaluation,
# reference or latency timing: the trial alone is compared.
ONE_TRIAL = [
    "study.n_trials=1",
    "study.reference=false",
    "study.reeval.max_trials=0",
    "study.verbose=true",  # the fit's INFO lines (its resume) on the console
    "train.epochs=4",
    "train.patience=10",
    "train.batch_size=256",
    "latency.enabled=false",
]


def _stored(folder: Path, number: int) -> tuple[dict, dict]:
    import json

    trial = folder / "studies" / "quick" / "trials" / str(number)
    metrics = json.loads((trial / "metrics.json").read_text())["metrics"]
    numbers = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/", "best_epoch"))}
    return numbers, torch.load(trial / "model_state.pt", weights_only=True)


@pytest.mark.slow
def test_a_trial_killed_after_its_second_epoch_goes_on_from_its_checkpoint(tmp_path):
    """A real worker SIGKILLed in a trial's third epoch; the same command again re-runs the
    trial's parameters from its checkpoint (epochs 3 and 4 only) and stores the same metrics
    and weights as a study that was never stopped."""
    import os
    import signal
    import subprocess
    import time

    from optuna.trial import TrialState

    from tests.conftest import ROOT
    from tests.test_sweep import _trials, sweep_cmd

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    subprocess.run(sweep_cmd(plain, *ONE_TRIAL), cwd=ROOT, env=env, check=True, capture_output=True)

    worker = subprocess.Popen(
        sweep_cmd(killed, *ONE_TRIAL), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    checkpoint = killed / "studies" / "quick" / "trials" / "0" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["epoch"] == 2:
            os.killpg(worker.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert worker.wait() == -signal.SIGKILL, "the worker ended before its second epoch was saved"
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2  # killed within epoch 3

    again = subprocess.run(
        sweep_cmd(killed, *ONE_TRIAL), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert f"resumed from {checkpoint.parent.parent / '1' / 'checkpoint.pt'}" in output
    assert "(epoch 2)" in output and "epoch 1:" not in output  # epochs 3 and 4 trained, only
    trials = {t.number: t for t in _trials(killed)}
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["failure_kind"] == "stale"
    assert trials[1].state == TrialState.COMPLETE
    assert trials[1].user_attrs["resumed_from"] == 0 and trials[1].params == trials[0].params
    assert trials[1].params == _trials(plain)[0].params  # the same point as the plain study's

    want_metrics, want_weights = _stored(plain, 0)
    got_metrics, got_weights = _stored(killed, 1)
    assert got_metrics == want_metrics
    assert list(got_weights) == list(want_weights)
    assert all(torch.equal(got_weights[k], want_weights[k]) for k in want_weights)
    assert (
        not checkpoint.exists() and not (checkpoint.parent.parent / "1" / "checkpoint.pt").exists()
    )
