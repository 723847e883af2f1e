"""Data layer: the synthetic generator, preparation, caching and batching."""

import importlib

import numpy as np
import polars as pl
import pytest
import torch

from adasparse_lab.data.batches import iterate
from adasparse_lab.data.prepare import prepare
from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import RandomSplit, SyntheticSource, TabularSource, TimeSplit
from adasparse_lab.data.synthetic import SCHEMA, SyntheticSpec, generate
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.metrics import auc


class TestSynthetic:
    frame = generate(SyntheticSpec(n_rows=200_000, seed=1))

    def test_domains_sizes_and_groups(self):
        spec = SyntheticSpec(n_rows=200_000, seed=1)
        counts = self.frame.group_by("domain").len().sort("domain")["len"].to_numpy()
        # sizes follow the geometric shares: largest / smallest = size_ratio (50)
        assert counts / counts.sum() == pytest.approx(spec.domain_shares(), rel=0.1)
        assert 40 < counts[0] / counts[-1] < 60
        # every group mixes large and small domains: each holds one of the 3 largest and one
        # of the 3 smallest, so a small domain can borrow from a similar large one
        groups = spec.domain_groups()
        names = spec.domain_names()
        for g in range(spec.n_groups):
            members = [k for k, name in enumerate(names) if groups[name] == g]
            assert min(members) < 3 and max(members) >= spec.n_domains - 3

    def test_zipf_ids_and_oracle(self):
        users = self.frame["user_id"].value_counts()["count"].sort(descending=True).to_numpy()
        assert users[0] > 20 * np.median(users)  # heavy head, long tail
        # the label is drawn from p_true: its mean matches the click rate, and p_true ranks well
        assert self.frame["click"].mean() == pytest.approx(self.frame["p_true"].mean(), abs=0.01)
        assert 0.7 < auc(self.frame["click"].to_numpy(), self.frame["p_true"].to_numpy()) < 0.95

    def test_same_seed_same_data(self):
        a = generate(SyntheticSpec(n_rows=1000, seed=5))
        assert a.equals(generate(SyntheticSpec(n_rows=1000, seed=5)))
        assert not a.equals(generate(SyntheticSpec(n_rows=1000, seed=6)))

    def test_bad_spec_names_key(self):
        with pytest.raises(ConfigError, match="data.source: .*n_row"):
            SyntheticSource(RandomSplit(), n_row=10)
        with pytest.raises(ConfigError, match="n_groups"):
            SyntheticSpec(n_domains=2, n_groups=3)


def test_random_split_is_independent_of_the_generator_seed():
    frame = generate(SyntheticSpec(n_rows=20_000, seed=0))
    parts = RandomSplit(0.1, 0.2, seed=0)(frame)
    assert sum(p.height for p in parts.values()) == frame.height
    assert parts["val"].height / frame.height == pytest.approx(0.1, abs=0.01)
    assert parts["test"].height / frame.height == pytest.approx(0.2, abs=0.01)
    for p in parts.values():  # the split must not correlate with the data (same seed 0)
        assert p["domain"].n_unique() == 12


def test_time_split_orders_by_column():
    frame = pl.DataFrame({"t": np.arange(100)[::-1], "x": np.arange(100)})
    parts = TimeSplit("t", val=0.1, test=0.2)(frame)
    assert (
        parts["train"]["t"].max()
        < parts["val"]["t"].min()
        <= parts["val"]["t"].max()
        < parts["test"]["t"].min()
    )
    assert [parts[s].height for s in ("train", "val", "test")] == [70, 10, 20]


def small_table(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "dom": rng.choice(["a", "b"], n),
            "item": rng.choice(["i1", "i2", "i3", "rare"], n, p=[0.4, 0.3, 0.29, 0.01]),
            "price": rng.lognormal(3, 1, n),
        }
    )


def test_prepare_encodes_oov_min_freq_normalises_and_caches(tmp_path, monkeypatch):
    train, val = small_table(400, 0), small_table(100, 1)
    val = val.with_columns(
        item=pl.when(pl.col("item") == "i3").then(pl.lit("unseen")).otherwise(pl.col("item"))
    )
    for name, frame in (("train", train), ("val", val), ("test", small_table(100, 2))):
        frame.write_csv(tmp_path / f"{name}.csv")
    schema = Schema(label="y", domain="dom", categorical=("item",), dense=("price",))
    source = TabularSource(
        train=str(tmp_path / "train.csv"),
        val=str(tmp_path / "val.csv"),
        test=str(tmp_path / "test.csv"),
    )
    data = prepare(source, schema, tmp_path / "cache", min_freq=10)
    assert schema.categorical == ("dom", "item")
    assert data.domain_names == ["a", "b"]
    item_codes = data.splits["val"].cat[:, 1]
    unseen = (val["item"] == "unseen").to_numpy()
    assert torch.all(item_codes[torch.from_numpy(unseen)] == 0)  # unseen -> OOV index 0
    rare = (val["item"] == "rare").to_numpy()
    assert torch.all(item_codes[torch.from_numpy(rare)] == 0)  # below min_freq -> OOV
    assert data.vocab_sizes == [3, 4]  # domain: OOV + a, b; item: OOV + i1, i2, i3 (not rare)
    dense = data.splits["train"].dense[:, 0]
    assert float(dense.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(dense.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # second call: served from the cache without reading the source
    monkeypatch.setattr(TabularSource, "load", lambda self: pytest.fail("cache was not used"))
    again = prepare(source, schema, tmp_path / "cache", min_freq=10)
    assert torch.equal(again.splits["val"].cat, data.splits["val"].cat)
    assert again.cache_path == data.cache_path


class CountingSource:
    """Wraps a source and counts its loads: a cached prepare must not load at all."""

    def __init__(self, inner):
        self.inner, self.loads = inner, 0

    def load(self):
        self.loads += 1
        return self.inner.load()

    def describe(self):
        return self.inner.describe()


def synthetic(split, n_rows=2000):
    return SyntheticSource(split, n_rows=n_rows, n_users=50, n_items=40)


class TestCacheKey:
    """Everything that shapes the prepared data is in the cache key; nothing else is read."""

    def test_second_prepare_reads_the_cache_without_calling_the_source(self, tmp_path):
        first = CountingSource(synthetic(RandomSplit(seed=3)))
        data = prepare(first, SCHEMA, tmp_path)
        second = CountingSource(synthetic(RandomSplit(seed=3)))  # an equal config, new objects
        again = prepare(second, SCHEMA, tmp_path)
        assert (first.loads, second.loads) == (1, 0)
        for split in ("train", "val", "test"):
            assert torch.equal(again.splits[split].cat, data.splits[split].cat)
            assert torch.equal(again.splits[split].label, data.splits[split].label)
        assert again.domain_names == data.domain_names and again.vocab_sizes == data.vocab_sizes

    @pytest.mark.parametrize(
        "other",
        [RandomSplit(seed=1), RandomSplit(val=0.2, test=0.1), RandomSplit(val=0.1, test=0.3)],
        ids=["seed", "val-fraction", "test-fraction"],
    )
    def test_a_changed_random_split_prepares_a_different_split(self, tmp_path, other):
        base = prepare(synthetic(RandomSplit(seed=0)), SCHEMA, tmp_path)
        changed = prepare(synthetic(other), SCHEMA, tmp_path)
        assert changed.cache_path != base.cache_path
        fresh = prepare(synthetic(other), SCHEMA, None)  # what the changed config really gives
        for split in ("train", "val", "test"):
            assert torch.equal(changed.splits[split].label, fresh.splits[split].label)
        assert not torch.equal(changed.splits["val"].p_true, base.splits["val"].p_true)

    def test_a_changed_time_split_column_prepares_a_different_split(self, tmp_path):
        n = 300
        frame = small_table(n).with_columns(
            t_up=pl.Series(np.arange(n)), t_down=pl.Series(np.arange(n)[::-1].copy())
        )
        frame.write_csv(tmp_path / "log.csv")
        schema = Schema(label="y", domain="dom", categorical=("item",), dense=("t_up",))

        def source(column):
            return TabularSource(path=str(tmp_path / "log.csv"), split=TimeSplit(column))

        up = prepare(source("t_up"), schema, tmp_path / "cache")
        down = prepare(source("t_down"), schema, tmp_path / "cache")
        # by t_up the test split is the last rows; by t_down the first ones
        assert float(up.splits["test"].dense[:, 0].min()) > float(
            up.splits["train"].dense[:, 0].max()
        )
        assert float(down.splits["test"].dense[:, 0].max()) < float(
            down.splits["train"].dense[:, 0].min()
        )

    def test_a_changed_separator_is_not_served_from_the_cache(self, tmp_path):
        small_table().write_csv(tmp_path / "log.csv", separator=";")
        schema = Schema(label="y", domain="dom", categorical=("item",))
        ok = TabularSource(path=str(tmp_path / "log.csv"), split=RandomSplit(), separator=";")
        assert prepare(ok, schema, tmp_path / "cache").domain_names == ["a", "b"]
        wrong = TabularSource(path=str(tmp_path / "log.csv"), split=RandomSplit(), separator=",")
        with pytest.raises(DataError, match=r"log.csv .*missing column"):
            prepare(wrong, schema, tmp_path / "cache")

    def test_build_data_from_the_config_reads_the_cache_the_second_time(
        self, make_cfg, monkeypatch
    ):
        from adasparse_lab.data.build import build_data

        cfg = make_cfg("tracking=none", "synthetic.n_rows=3000")
        calls = []
        real_load = SyntheticSource.load
        monkeypatch.setattr(
            SyntheticSource, "load", lambda self: calls.append(1) or real_load(self)
        )
        first = build_data(cfg.data, cfg.paths.cache)
        second = build_data(cfg.data, cfg.paths.cache)
        assert len(calls) == 1
        assert sum(len(split) for split in second.splits.values()) == 3000
        assert torch.equal(first.splits["test"].cat, second.splits["test"].cat)

    def test_a_new_encoding_version_ignores_old_caches(self, tmp_path, monkeypatch):
        prepare_mod = importlib.import_module("adasparse_lab.data.prepare")  # not the function

        old = prepare(synthetic(RandomSplit()), SCHEMA, tmp_path)
        monkeypatch.setattr(prepare_mod, "ENCODING_VERSION", prepare_mod.ENCODING_VERSION + 1)
        counting = CountingSource(synthetic(RandomSplit()))
        new = prepare(counting, SCHEMA, tmp_path)
        assert counting.loads == 1 and new.cache_path != old.cache_path


def test_bad_input_messages(tmp_path):
    frame = small_table()
    frame.write_csv(tmp_path / "ok.csv")
    schema = Schema(label="y", domain="dom", categorical=("item", "missing_col"))
    src = TabularSource(path=str(tmp_path / "ok.csv"), split=RandomSplit())
    with pytest.raises(
        DataError, match=r"ok.csv \(train split\): missing column\(s\) \['missing_col'\]"
    ):
        prepare(src, schema, None)
    frame.with_columns(y=pl.lit(2)).write_csv(tmp_path / "bad_label.csv")
    src = TabularSource(path=str(tmp_path / "bad_label.csv"), split=RandomSplit())
    with pytest.raises(DataError, match=r"label column 'y' must hold only 0 and 1.*\[2\]"):
        prepare(src, Schema(label="y", domain="dom", categorical=("item",)), None)
    with pytest.raises(DataError, match="data file does not exist: .*nowhere.csv"):
        TabularSource(path=str(tmp_path / "nowhere.csv"), split=RandomSplit())


def test_batches_cover_every_row_once(tiny_data):
    split = tiny_data.splits["val"]
    gen = torch.Generator().manual_seed(0)
    batches = list(iterate(split, 777, shuffle=True, generator=gen))
    assert [len(b.label) for b in batches] == [777] * (len(split) // 777) + [len(split) % 777]
    rows = torch.cat([torch.cat([b.cat, b.domain[:, None]], 1) for b in batches])
    original = torch.cat([split.cat, split.domain[:, None]], 1)
    assert not torch.equal(rows, original)  # shuffled ...

    # ... but the same rows, each once: equal as multisets (sorted lexicographically)
    def lex_sorted(t):
        for col in reversed(range(t.shape[1])):
            t = t[torch.sort(t[:, col], stable=True).indices]
        return t

    assert torch.equal(lex_sorted(rows), lex_sorted(original))
    # features, label and domain of one row stay together through the shuffle
    first = batches[0]
    assert torch.equal(first.domain, first.cat[:, SCHEMA.categorical.index("domain")] - 1)
    assert first.cat.shape == (777, len(SCHEMA.categorical)) and first.dense.shape == (777, 2)
