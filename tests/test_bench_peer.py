"""The peer section (bench/peer.py): skipped without FuxiCTR, the same rows for both sides, its
table from given numbers, and a tiny real run of both sides when FuxiCTR is installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from adasparse_lab.bench import peer
from adasparse_lab.bench.__main__ import main, parse_args
from adasparse_lab.bench.peer import (
    PeerBenchConfig,
    PeerResult,
    format_peer,
    missing_peer,
    prepare_peer_data,
)
from adasparse_lab.bench.peer_protocol import (
    DictBatches,
    PeerProtocol,
    SideRun,
    feature_specs,
    field_names,
    label_name,
    score_split,
    write_npz,
)
from adasparse_lab.metrics import auc


@pytest.fixture(scope="module")
def tiny():
    """3,000 synthetic rows, prepared as the section prepares them."""
    return prepare_peer_data(PeerBenchConfig(rows=3_000))


def test_without_fuxictr_the_section_says_why_and_prepares_nothing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fuxictr", None)  # import fuxictr -> ImportError
    monkeypatch.delitem(sys.modules, "adasparse_lab.bench.peer_fuxictr", raising=False)

    def prepare(cfg):
        raise AssertionError("data prepared although FuxiCTR is missing")

    monkeypatch.setattr(peer, "prepare_peer_data", prepare)
    assert "FuxiCTR is not importable" in missing_peer()
    payload = main(["--only", "peer", "--threads", str(torch.get_num_threads())])
    out = capsys.readouterr().out
    assert "[13] peer  skipped: FuxiCTR is not importable" in out
    assert "pip install .[peer]" in out
    assert payload["peer"]["skipped"].startswith("FuxiCTR is not importable")


def test_flags_and_the_protocol_defaults():
    args = parse_args(["--only", "peer"])
    assert (args.threads, args.peer_data, args.peer_seeds, args.peer_epochs) == (
        2,
        "synthetic",
        [0, 1, 2],
        5,
    )
    p = PeerProtocol()
    assert (p.epochs, p.batch_size, p.lr) == (5, 1024, 1e-3)
    args = parse_args(
        ["--only", "peer", "--peer-data", "douban", "--peer-models", "mmoe", "--peer-rows", "500"]
    )
    assert (args.peer_data, args.peer_models, args.peer_rows) == ("douban", ["mmoe"], 500)
    assert parse_args(["--only", "peer", "--only", "train"]).threads is None  # not peer alone


def test_fuxictr_gets_our_codes_vocabularies_and_split(tiny):
    cat, dense = field_names(tiny)
    specs = feature_specs(tiny)
    assert list(specs) == [*cat, *dense] and len(cat) == 8 and len(dense) == 2
    assert [specs[n]["vocab_size"] for n in cat] == tiny.vocab_sizes
    assert all("padding_idx" not in specs[n] for n in cat)  # code 0 (OOV) is a trained row
    for split in ("val", "test"):  # in order: column j of the dicts is our field j
        part, batches = tiny.splits[split], list(DictBatches(tiny, split, 256))
        assert len(batches) == -(-len(part) // 256)
        for j, name in enumerate(cat):
            assert torch.equal(torch.cat([b[name] for b in batches]), part.cat[:, j].long())
        for j, name in enumerate(dense):
            assert torch.equal(torch.cat([b[name] for b in batches]), part.dense[:, j])
        assert torch.equal(torch.cat([b[label_name(tiny)] for b in batches]), part.label)


def test_a_shuffled_epoch_holds_every_train_row_once(tiny):
    cat, dense = field_names(tiny)
    train = tiny.splits["train"]
    torch.manual_seed(0)
    batches = list(DictBatches(tiny, "train", 1024, shuffle=True))
    rows = torch.cat(
        [torch.stack([b[n].double() for n in (*cat, *dense, label_name(tiny))], 1) for b in batches]
    )
    ours = torch.cat([train.cat.double(), train.dense.double(), train.label[:, None].double()], 1)
    assert not torch.equal(rows, ours)  # shuffled
    assert torch.equal(torch.unique(rows, dim=0), torch.unique(ours, dim=0))
    assert len(rows) == len(ours)


def test_real_data_configs_read_paths_data_and_cap_train_rows():
    full = prepare_peer_data(PeerBenchConfig(data="douban", rows=None))
    capped = prepare_peer_data(PeerBenchConfig(data="douban", rows=100))
    assert len(capped.splits["train"]) == 100 < len(full.splits["train"])
    assert torch.equal(capped.splits["train"].cat, full.splits["train"].cat[:100])
    assert torch.equal(capped.splits["test"].cat, full.splits["test"].cat)
    assert capped.vocab_sizes == full.vocab_sizes


def test_both_sides_are_scored_by_the_project_metrics(tiny):
    test = tiny.splits["test"]
    logits = np.linspace(-2, 2, len(test))
    overall, mean_domain = score_split(test, logits)
    assert overall == pytest.approx(auc(test.label.numpy(), logits))
    probs = 1 / (1 + np.exp(-logits))  # FuxiCTR's y_pred: a monotone map, the same AUCs
    assert score_split(test, probs) == pytest.approx((overall, mean_domain))


def _run(model, side, seed, auc_, speed):
    return SideRun(model, side, seed, auc_, auc_ - 0.01, 3, 5, speed, 10.0, 1000)


def test_the_table_from_given_numbers():
    cfg = PeerBenchConfig(seeds=(0, 1), models=("dnn",))
    res = PeerResult(cfg, "2.3.10", {"rows": {"train": 80, "val": 10, "test": 10}, "domains": 12,
                                     "categorical": 8, "dense": 2})  # fmt: skip
    res.architectures["dnn"] = {"embedding_dim": 16, "hidden_dims": [256, 128, 64]}
    res.runs = [
        _run("dnn", "ours", 0, 0.76, 200.0),
        _run("dnn", "fuxictr", 0, 0.75, 100.0),
        _run("dnn", "ours", 1, 0.74, 300.0),
        _run("dnn", "fuxictr", 1, 0.75, 100.0),
    ]
    text = format_peer(res)
    assert "FuxiCTR 2.3.10" in text and "train 80 / val 10 / test 10 rows; 12 domains" in text
    assert "seeds 0 1 interleaved, 2 torch threads" in text
    ours = next(line for line in text.splitlines() if "ours " in line and "dnn" in line)
    assert "0.7500 ± 0.0141" in ours and "0.7400 ± 0.0141" in ours and "250" in ours
    theirs = next(line for line in text.splitlines() if "fuxictr " in line)
    assert "0.7500 ± 0.0000" in theirs and "100" in theirs and "1,000" in theirs
    # paired over 2 seeds: differences +0.01 and -0.01, t(1) 97.5% = 12.706, sem 0.01
    assert (
        "ours - FuxiCTR: test AUC +0.0000 [-0.1271, +0.1271] (per seed +0.0100 -0.0100); "
        "samples/s 2.50x"
    ) in text
    assert "FuxiCTR fed by its NpzDataLoader (timed)" in text
    res.runs = res.runs[:2]  # one seed: no sd
    assert "0.7600 ±   -" in format_peer(res)


def test_fuxictrs_npz_input_holds_our_rows(tiny, tmp_path):
    """What FuxiCTR's NpzDataLoader stacks (each feature's array by name, then the label) is
    our split, column for column."""
    path = write_npz(tiny, "test", str(tmp_path / "test.npz"))
    stored, part = np.load(path), tiny.splits["test"]
    cat, dense = field_names(tiny)
    for j, name in enumerate(cat):
        assert np.array_equal(stored[name], part.cat[:, j].numpy())
    for j, name in enumerate(dense):
        assert np.array_equal(stored[name], part.dense[:, j].numpy())
    assert np.array_equal(stored[label_name(tiny)], part.label.float().numpy())
    with pytest.raises(ValueError, match=r"--peer-fuxictr-loader 'csv'; choose one of"):
        PeerProtocol(fuxictr_loader="csv")


def test_fuxictrs_own_loader_yields_our_batches(tiny, tmp_path):
    pytest.importorskip("fuxictr")
    from adasparse_lab.bench.peer_fuxictr import _loaders, feature_map

    fmap = feature_map(tiny, 16)
    _, val, test = _loaders(tiny, fmap, PeerProtocol(batch_size=256), str(tmp_path))
    for loader, split in ((val, "val"), (test, "test")):  # unshuffled: in row order
        ours = list(DictBatches(tiny, split, 256))
        theirs = list(loader)
        assert len(theirs) == len(ours)
        for a, b in zip(ours, theirs):
            for name, column in a.items():
                assert torch.equal(b[name].to(column.dtype), column), (split, name)


def _tiny_real_run(models: tuple[str, ...]) -> PeerResult:
    pytest.importorskip("fuxictr")
    assert missing_peer() is None
    cfg = PeerBenchConfig(
        rows=3_000, seeds=(0,), models=models, threads=1,
        protocol=PeerProtocol(epochs=1, batch_size=128, lr=1e-2),
    )  # fmt: skip
    return peer.run_peer_bench(cfg)


def _check_runs(res: PeerResult, models: tuple[str, ...]) -> None:
    assert [(r.model, r.side) for r in res.runs] == [(m, s) for m in models for s in peer.SIDES]
    for r in res.runs:
        assert 0.5 < r.test_auc <= 1 and 0.5 < r.test_mean_domain_auc <= 1, r
        assert r.samples_per_s > 0 and (r.best_epoch, r.epochs_run) == (1, 1)
    for model in models:  # the same architecture: FuxiCTR's numeric embedding has no bias
        ours, theirs = res.of(model, "ours")[0], res.of(model, "fuxictr")[0]
        assert ours.params - theirs.params == 2 * 16, model


def test_both_sides_learn_on_a_tiny_run():
    res = _tiny_real_run(("dnn",))
    _check_runs(res, ("dnn",))
    assert res.data_shape["rows"]["train"] > 2_000


@pytest.mark.slow
def test_every_peer_model_learns_on_a_tiny_run():
    models = tuple(name for name, _ in peer.PEER_MODELS)
    _check_runs(_tiny_real_run(models), models)
