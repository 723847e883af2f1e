"""The prepared store (data.store): streaming preparation, memory-mapped reading, block shuffle,
atomic and shared writing, stale stores never reused, data.storage errors."""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adasparse_lab.data.batches import iterate
from adasparse_lab.data.prepare import prepare
from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import RandomSplit, SyntheticSource, TabularSource, TimeSplit
from adasparse_lab.data.store import read_meta
from adasparse_lab.data.synthetic import SCHEMA, SyntheticSpec, generate, generate_chunks
from adasparse_lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("cat", "dense", "label", "domain", "user", "p_true")


def synthetic(n_rows=3000, chunk_rows=0, seed=0, split=None):
    return SyntheticSource(
        split or RandomSplit(seed=seed), n_rows=n_rows, n_users=60, n_items=50,
        chunk_rows=chunk_rows,
    )  # fmt: skip


def assert_same_values(a, b, dense_atol=0.0):
    for split in ("train", "val", "test"):
        x, y = a.splits[split], b.splits[split]
        for col in COLUMNS:
            u, v = getattr(x, col), getattr(y, col)
            assert (u is None) == (v is None), col
            if u is None:
                continue
            if col == "dense":
                torch.testing.assert_close(u.float(), v.float(), rtol=0, atol=dense_atol)
            else:
                assert torch.equal(u.to(v.dtype), v), (split, col)


def rows_of(batches):
    return torch.cat([torch.cat([b.cat, b.dense, b.label[:, None]], 1) for b in batches])


class Loads:
    """Counts how often a source is read (load or scan)."""

    def __init__(self, inner):
        self.inner, self.loads = inner, 0

    def load(self):
        self.loads += 1
        return self.inner.load()

    def describe(self):
        return self.inner.describe()


def test_mmap_and_memory_read_the_same_store_and_batches(tmp_path):
    # the chunked generator: one preparation route (one store) for both storages
    memory = prepare(synthetic(chunk_rows=1000), SCHEMA, tmp_path, storage="memory")
    mapped = prepare(synthetic(chunk_rows=1000), SCHEMA, tmp_path, storage="mmap")
    assert mapped.cache_path == memory.cache_path
    train = mapped.splits["train"]
    assert train.cat.dtype == torch.int32 and train.label.dtype == torch.int8
    assert train.domain.dtype == torch.int16 and train.block_rows is not None
    assert (
        memory.splits["train"].cat.dtype == torch.int64
        and memory.splits["train"].block_rows is None
    )
    assert_same_values(memory, mapped)
    held = list(iterate(mapped.splits["val"], 333))  # pages released: views still read right
    for a, b in zip(iterate(memory.splits["val"], 333), held, strict=True):
        for name in ("cat", "dense", "label", "domain"):
            assert torch.equal(getattr(a, name), getattr(b, name))
            assert getattr(a, name).dtype == getattr(b, name).dtype


def test_auto_storage_maps_large_stores(tmp_path, monkeypatch):
    monkeypatch.setattr("adasparse_lab.data.store.AUTO_MEMORY_BYTES", 1000)
    assert prepare(synthetic(), SCHEMA, tmp_path).splits["train"].block_rows is not None
    monkeypatch.setattr("adasparse_lab.data.store.AUTO_MEMORY_BYTES", 10**12)
    assert prepare(synthetic(), SCHEMA, tmp_path).splits["train"].block_rows is None


def test_block_shuffle_gives_every_row_once_in_full_batches(tmp_path):
    split = prepare(synthetic(), SCHEMA, tmp_path, storage="mmap").splits["train"]
    split.block_rows = 100  # many blocks and several windows
    batches = list(iterate(split, 77, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b.label) for b in batches] == [77] * (len(split) // 77) + [len(split) % 77]
    rows, original = rows_of(batches), rows_of(iterate(split, len(split)))
    assert not torch.equal(rows, original)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(rows) == key(original)
    again = list(iterate(split, 77, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(rows_of(again), rows)  # deterministic given the generator


@pytest.mark.slow
def test_training_is_equal_on_both_paths(make_cfg):
    from adasparse_lab.data.build import build_data
    from adasparse_lab.run.build import build_components, build_model
    from adasparse_lab.run.fit import fit

    cfg = make_cfg(
        "tracking=none", "train.progress=false", "train.epochs=2", "synthetic.n_rows=6000"
    )
    results = []
    for storage in ("memory", "mmap"):
        cfg.data.storage = storage
        data = build_data(cfg.data, cfg.paths.cache)
        data.splits["train"].block_rows = 512  # the same (block) shuffle on both paths
        parts = build_components(cfg)
        torch.manual_seed(0)  # the same initial weights
        model = build_model(cfg.model, data, parts.pruner)
        fit(model, data, parts.settings, parts.regularizer, parts.schedule)
        results.append(model.state_dict())
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name  # bitwise: the same batches


def test_random_split_in_chunks_equals_the_split_at_once():
    split = RandomSplit(val=0.2, test=0.15, seed=4)
    whole = split.part_stream()(10_000)
    stream = split.part_stream()
    chunked = np.concatenate([stream(n) for n in (1, 999, 3000, 6000)])
    assert np.array_equal(whole, chunked)
    assert abs((whole == 1).mean() - 0.2) < 0.02 and abs((whole == 2).mean() - 0.15) < 0.02


def test_chunked_generator_is_its_own_stream_and_default_is_unchanged():
    spec = SyntheticSpec(n_rows=5000, n_users=60, n_items=50)
    assert next(generate_chunks(spec)).equals(generate(spec))  # chunk_rows=0: today's rows
    chunked = SyntheticSpec(n_rows=5000, n_users=60, n_items=50, chunk_rows=1500)
    chunks = list(generate_chunks(chunked))
    assert [c.height for c in chunks] == [1500, 1500, 1500, 500]
    assert pl.concat(chunks).equals(generate(chunked))
    assert not pl.concat(chunks).equals(generate(spec))  # documented: another stream
    shares = pl.concat(chunks)["domain"].value_counts(normalize=True).sort("domain")
    assert np.allclose(shares["proportion"].to_numpy(), spec.domain_shares(), atol=0.03)


def test_streamed_preparation_equals_the_in_memory_one(tmp_path):
    source = synthetic(n_rows=4000, chunk_rows=700)
    streamed = prepare(source, SCHEMA, tmp_path / "a", storage="mmap", chunk_rows=500)
    in_memory = prepare(Loads(source), SCHEMA, tmp_path / "b", storage="memory", chunk_rows=500)
    # codes, labels, domains identical; dense standardised with streaming vs numpy statistics
    assert_same_values(streamed, in_memory, dense_atol=1e-5)
    assert streamed.vocab_sizes == in_memory.vocab_sizes


def scan_source(path: Path, split):
    """A TabularSource: its scan() is the raw table as a lazy query."""
    return TabularSource(path=str(path), split=split)


@pytest.mark.parametrize("split", [RandomSplit(seed=2), TimeSplit("t")], ids=["random", "time"])
def test_scan_sources_stream_with_the_same_split(tmp_path, split):
    rng = np.random.default_rng(0)
    n = 3000
    pl.DataFrame({
        "y": rng.integers(0, 2, n), "dom": rng.choice(["a", "b", "c"], n),
        "item": rng.integers(0, 40, n), "t": rng.permutation(n) // 2, "x": rng.normal(size=n),
    }).write_csv(tmp_path / "log.csv")  # fmt: skip
    schema = Schema(label="y", domain="dom", categorical=("item",), dense=("x", "t"))
    source = scan_source(tmp_path / "log.csv", split)
    streamed = prepare(source, schema, tmp_path / "s", storage="mmap", chunk_rows=400)
    loaded = prepare(Loads(source), schema, tmp_path / "m", storage="memory")
    assert_same_values(streamed, loaded, dense_atol=1e-5)


class TestStaleStore:
    """Whatever shapes the data makes a new store; the old one is never served."""

    def table(self, tmp_path, seed=0, n=600):
        rng = np.random.default_rng(seed)
        pl.DataFrame({
            "y": rng.integers(0, 2, n), "dom": rng.choice(["a", "b"], n),
            "item": rng.integers(0, 30, n), "x": rng.exponential(size=n),
        }).write_csv(tmp_path / "log.csv")  # fmt: skip
        return TabularSource(path=str(tmp_path / "log.csv"), split=RandomSplit())

    schema = Schema(label="y", domain="dom", categorical=("item",), dense=("x",))

    def test_a_changed_source_file(self, tmp_path):
        first = prepare(self.table(tmp_path, 0), self.schema, tmp_path / "c", storage="mmap")
        second = prepare(self.table(tmp_path, 1), self.schema, tmp_path / "c", storage="mmap")
        assert second.cache_path != first.cache_path
        assert not torch.equal(first.splits["train"].dense, second.splits["train"].dense)

    def test_a_changed_schema(self, tmp_path):
        source = self.table(tmp_path)
        first = prepare(source, self.schema, tmp_path / "c", storage="mmap")
        narrower = Schema(label="y", domain="dom", categorical=("item",))
        second = prepare(source, narrower, tmp_path / "c", storage="mmap")
        assert second.cache_path != first.cache_path
        assert (first.splits["val"].dense.shape[1], second.splits["val"].dense.shape[1]) == (1, 0)

    def test_a_changed_split(self, tmp_path):
        first = prepare(synthetic(seed=0), SCHEMA, tmp_path, storage="mmap")
        second = prepare(synthetic(seed=5), SCHEMA, tmp_path, storage="mmap")
        assert second.cache_path != first.cache_path
        assert not torch.equal(first.splits["val"].p_true[:50], second.splits["val"].p_true[:50])

    @pytest.mark.parametrize("rule", [{"min_freq": 30}, {"dense_log1p": False}])
    def test_a_changed_encoding_rule(self, tmp_path, rule):
        source = self.table(tmp_path)
        first = prepare(source, self.schema, tmp_path / "c", storage="mmap")
        second = prepare(source, self.schema, tmp_path / "c", storage="mmap", **rule)
        assert second.cache_path != first.cache_path
        if "min_freq" in rule:
            assert second.vocab_sizes[1] < first.vocab_sizes[1]
        else:
            assert not torch.equal(first.splits["train"].dense, second.splits["train"].dense)


def test_concurrent_preparers_prepare_once(tmp_path):
    sources = [Loads(synthetic()) for _ in range(3)]
    results = [None] * 3

    def work(i):
        results[i] = prepare(sources[i], SCHEMA, tmp_path, storage="mmap")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.loads for s in sources) == 1  # one prepared, the others waited and read it
    assert_same_values(results[0], results[2])


KILLED = textwrap.dedent("""
    import os, signal, sys
    from adasparse_lab.data import store
    from adasparse_lab.data.prepare import prepare
    from adasparse_lab.data.sources import RandomSplit, SyntheticSource
    from adasparse_lab.data.synthetic import SCHEMA
    real = store.StoreWriter.write
    def write(self, split, start, values):
        real(self, split, start, values)
        if split == "val":  # train written, val half-way: die without cleaning up
            os.kill(os.getpid(), signal.SIGKILL)
    store.StoreWriter.write = write
    source = SyntheticSource(RandomSplit(), n_rows=3000, n_users=60, n_items=50)
    prepare(source, SCHEMA, sys.argv[1], storage="mmap", chunk_rows=100)
""")


@pytest.mark.slow
def test_a_killed_preparation_leaves_no_store_that_is_read(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers and not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    data = prepare(synthetic(), SCHEMA, tmp_path, storage="mmap")  # the same key
    assert read_meta(data.cache_path)["rows"]["train"] == len(data.splits["train"])
    assert not [p for p in leftovers if p.exists()], sorted(os.listdir(tmp_path))  # removed
    assert_same_values(data, prepare(synthetic(), SCHEMA, None))


def test_storage_errors_name_the_key(make_cfg):
    from adasparse_lab.data.build import build_data

    with pytest.raises(ConfigError, match=r"data.storage='disk'; choose one of"):
        prepare(synthetic(), SCHEMA, None, storage="disk")
    with pytest.raises(ConfigError, match=r"data.storage='mmap' needs a cache directory"):
        prepare(synthetic(), SCHEMA, None, storage="mmap")
    with pytest.raises(ConfigError, match=r"data.synthetic.chunk_rows=-1"):
        SyntheticSpec(chunk_rows=-1)
    cfg = make_cfg("tracking=none", "data.storage=ram")
    with pytest.raises(ConfigError, match=r"data.storage='ram'"):
        build_data(cfg.data, cfg.paths.cache)


PEAK = textwrap.dedent("""
    import sys
    from adasparse_lab.bench.preparation import peak_rss_bytes
    from adasparse_lab.data.batches import iterate
    from adasparse_lab.data.prepare import prepare
    from adasparse_lab.data.sources import RandomSplit, SyntheticSource
    from adasparse_lab.data.synthetic import SCHEMA
    n = int(sys.argv[2])
    source = SyntheticSource(RandomSplit(), n_rows=n, chunk_rows=100_000)
    data = prepare(source, SCHEMA, sys.argv[1], storage="mmap", chunk_rows=100_000)
    data.splits["train"].block_rows = 8192  # windows of 64k rows: full at both sizes
    for batch in iterate(data.splits["train"], 4096, shuffle=True):  # a reader, too
        pass
    print(peak_rss_bytes())
""")


@pytest.mark.slow
def test_peak_memory_of_preparing_and_reading_does_not_grow_with_rows(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    peaks = {}
    for n in (300_000, 1_500_000):
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(tmp_path / str(n)), str(n)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        peaks[n] = int(out.stdout.split()[-1])
    # 1.2M more rows are ~130 MB as in-memory tensors (~110 bytes a row): the peak grows by
    # far less (chunks are 100k rows whatever the size; the store is read through mmap, in
    # block-shuffled windows whose pages are released after the copy)
    growth = peaks[1_500_000] - peaks[300_000]
    assert growth < 0.25 * 1_200_000 * 110, peaks


@pytest.mark.slow
def test_a_run_on_the_mapped_store_reports_the_same_data_numbers(make_cfg):
    """Everything downstream of training reads a memory-mapped split (int8 labels, int16
    domains, int32 codes) as it reads one in RAM: the data-derived numbers are equal."""
    from adasparse_lab.run.pipeline import train_and_evaluate

    tables = {}
    for storage in ("memory", "mmap"):
        cfg = make_cfg("tracking=none", "train.progress=false", "train.epochs=1")
        cfg.data.storage = storage
        result = train_and_evaluate(cfg)
        assert all(np.isfinite(v) for v in result.metrics.values() if isinstance(v, float))
        tables[storage] = result.domains
    data_columns = [
        c for c in tables["memory"].columns if "rows" in c or "pos_rate" in c or "oracle" in c
    ]
    assert len(data_columns) >= 3
    assert tables["memory"].select(data_columns).equals(tables["mmap"].select(data_columns))


@pytest.mark.slow
def test_the_study_domain_summary_reads_a_mapped_store_as_one_in_ram(tmp_path):
    from adasparse_lab.study.session import domain_summary

    memory = prepare(synthetic(), SCHEMA, tmp_path, storage="memory")
    mapped = prepare(synthetic(), SCHEMA, tmp_path, storage="mmap")
    summary = domain_summary(memory)
    assert summary == domain_summary(mapped)
    assert all(row["pos_rate"] is not None and 0 < row["pos_rate"] < 1 for row in summary)


def test_per_split_files_stream_by_their_source_split_column(tmp_path):
    rng = np.random.default_rng(1)
    files = {}
    for name, n in (("train", 1200), ("val", 300), ("test", 300)):
        pl.DataFrame({
            "y": rng.integers(0, 2, n), "dom": rng.choice(["a", "b"], n),
            "item": rng.integers(0, 40, n), "x": rng.normal(size=n),
        }).write_csv(tmp_path / f"{name}.csv")  # fmt: skip
        files[name] = str(tmp_path / f"{name}.csv")
    schema = Schema(label="y", domain="dom", categorical=("item",), dense=("x",))
    source = TabularSource(**files)
    streamed = prepare(source, schema, tmp_path / "s", storage="mmap", chunk_rows=250)
    loaded = prepare(Loads(source), schema, tmp_path / "m", storage="memory")
    assert [len(streamed.splits[s]) for s in ("train", "val", "test")] == [1200, 300, 300]
    assert_same_values(streamed, loaded, dense_atol=1e-5)


def test_a_store_is_not_reused_across_preparation_routes(tmp_path):
    """Loaded in memory (numpy statistics) and scanned (polars streaming statistics), the dense
    scale can differ in the last bits: each route has its own store, named in the key."""
    loaded = prepare(synthetic(), SCHEMA, tmp_path, storage="memory")
    scanned = prepare(synthetic(), SCHEMA, tmp_path, storage="mmap")
    assert loaded.cache_path != scanned.cache_path
    routes = [read_meta(d.cache_path)["description"]["prepared_by"] for d in (loaded, scanned)]
    assert routes == ["load", "scan"]
    assert_same_values(loaded, scanned, dense_atol=1e-5)
    # the chunked generator is one route whatever the storage: one store, read both ways
    chunked = [prepare(synthetic(chunk_rows=1000), SCHEMA, tmp_path, storage=s)
               for s in ("memory", "mmap")]  # fmt: skip
    assert chunked[0].cache_path == chunked[1].cache_path


def test_a_reader_version_is_part_of_the_key(tmp_path, monkeypatch):
    from adasparse_lab.data.readers.base import FileSource
    from adasparse_lab.data.readers.processed import SplitFilesSource

    root = ROOT / "tests" / "fixtures" / "taobao_fuxictr"
    files = {"train": "train_sample.csv", "val": "valid_sample.csv", "test": "test_sample.csv"}
    source = SplitFilesSource(root=str(root), **files)
    assert source.describe()["version"] == FileSource.version
    schema = Schema(label="clk", domain="pid", categorical=("pid", "brand"), dense=("price",))
    before = prepare(source, schema, tmp_path, storage="memory")
    monkeypatch.setattr(SplitFilesSource, "version", SplitFilesSource.version + 1)
    after = prepare(source, schema, tmp_path, storage="memory")
    assert after.cache_path != before.cache_path
