"""The release readers (adasparse_lab/data/readers/) on fixtures in each release's raw layout:
row counts, domains, labels and joined values checked against the files parsed by hand."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adasparse_lab.config import instantiate
from adasparse_lab.data.__main__ import main as data_main
from adasparse_lab.data.build import build_data
from adasparse_lab.data.readers.movielens import MovieLens1MSource
from adasparse_lab.data.sources import SOURCE_SPLIT
from adasparse_lab.errors import DataError
from tests.conftest import FIXTURES, compose_config

ALIEXPRESS = ["data.source.countries=[XA,XB]"]
AE_RAW = ["data.source.countries=[NL,ES]"]


def source_of(tmp: Path, name: str, *overrides: str):
    cfg = compose_config([f"data={name}", "tracking=none", *overrides], tmp)
    return instantiate(cfg.data.source, "data.source"), cfg


def prepared(tmp: Path, name: str, *overrides: str):
    cfg = compose_config([f"data={name}", "tracking=none", *overrides], tmp)
    return build_data(cfg.data, cfg.paths.cache)


def split_counts(data, split: str) -> dict[str, int]:
    return dict(zip(data.domain_names, data.rows_per_domain(split).tolist()))


def aliccp_by_hand(split: str) -> dict[int, dict[str, str]]:
    """sample_id -> {field: feature id, 'D<field>': its value, 'click': ...}: a field's last
    entry, common features after the sample's own (Scenario-Wise-Rec's rule)."""
    common = {}
    for line in (FIXTURES / f"aliccp/common_features_{split}.csv").read_text().splitlines():
        key, _, feats = line.split(",", 2)
        common[key] = feats
    out = {}
    for line in (FIXTURES / f"aliccp/sample_skeleton_{split}.csv").read_text().splitlines():
        sid, click, buy, key, _, feats = line.split(",", 5)
        row = {"click": click, "purchase": buy}
        for entry in (feats + "\x01" + common[key]).split("\x01"):
            field, rest = entry.split("\x02")
            row[field], row[f"D{field}"] = rest.split("\x03")
        out[int(sid)] = row
    return out


def test_aliccp_raw_joins_skeleton_and_common_features(tmp_path):
    source, _ = source_of(tmp_path, "aliccp")
    frame = source.scan().collect()
    expected = {**aliccp_by_hand("train"), **aliccp_by_hand("test")}
    dropped = {k for k, r in expected.items() if (r["click"], r["purchase"]) == ("0", "1")}
    assert len(dropped) == 4  # conversions without a click (3 in train, 1 in test)
    assert frame.height == len(expected) - len(dropped) == 90 + 45 - 4
    assert not dropped & set(frame.get_column("sample_id").cast(pl.Int64).to_list())
    for row in frame.iter_rows(named=True):
        want = expected[int(row["sample_id"])]
        assert str(row["click"]) == want["click"]
        for field in ["101", "124", "109_14", "205", "853", "301"]:  # common and skeleton
            assert row[field] == want[field], field
        assert row["D109_14"] == pytest.approx(float(want["D109_14"]))  # last of 2 entries
        assert row["D508"] == pytest.approx(float(want["D508"]))
    assert frame.get_column(SOURCE_SPLIT).value_counts().sort(SOURCE_SPLIT).rows() == [
        ("test", 44),
        ("train", 87),
    ]
    data = prepared(tmp_path, "aliccp")
    assert data.domain_names == ["9351665", "9351666", "9351667"]  # field 301's feature ids
    assert len(data.splits["test"]) == 44
    assert len(data.splits["train"]) + len(data.splits["val"]) == 87
    assert 0 < len(data.splits["val"]) < 20  # 10% of train, seeded
    test_rows = [r for k, r in aliccp_by_hand("test").items() if k not in dropped]
    domains = [r["301"] for r in test_rows]
    assert split_counts(data, "test") == {d: domains.count(d) for d in data.domain_names}
    clicks = sum(int(r["click"]) for r in test_rows)
    assert data.splits["test"].label.sum().item() == clicks


def test_aliccp_processed_has_the_documented_domains(tmp_path):
    data = prepared(tmp_path, "aliccp_processed")
    assert data.domain_names == ["1", "2", "3"]
    # counts from tests/fixtures/aliccp_processed/SOURCE.md
    assert split_counts(data, "train") == {"1": 69, "2": 19, "3": 12}
    assert split_counts(data, "val") == {"1": 38, "2": 7, "3": 5}
    assert split_counts(data, "test") == {"1": 39, "2": 6, "3": 5}
    assert [int(data.splits[s].label.sum()) for s in ("train", "val", "test")] == [7, 3, 6]
    assert len(data.schema.dense) == 8


def test_aliexpress_domain_is_the_country_folder(tmp_path):
    source, _ = source_of(tmp_path, "aliexpress", *ALIEXPRESS)
    frame = source.scan().collect()
    for country in ["XA", "XB"]:
        for split in ["train", "test"]:
            raw = pl.read_csv(FIXTURES / f"aliexpress/AliExpress_{country}/{split}.csv")
            got = frame.filter((pl.col("domain") == country) & (pl.col(SOURCE_SPLIT) == split))
            assert got.get_column("search_id").to_list() == raw.get_column("search_id").to_list()
            assert got.get_column("click").to_list() == raw.get_column("click").to_list()
    data = prepared(tmp_path, "aliexpress", *ALIEXPRESS)
    assert data.domain_names == ["XA", "XB"]
    assert split_counts(data, "test") == {"XA": 10, "XB": 10}
    train_val = data.rows_per_domain("train") + data.rows_per_domain("val")
    assert train_val.tolist() == [50, 50]
    assert len(data.schema.dense) == 63


def test_aliexpress_raw_joins_users_and_items_into_mtreclib_columns(tmp_path):
    source, _ = source_of(tmp_path, "aliexpress_raw", *AE_RAW)
    frame = source.scan().collect()
    expected = []
    for cc in ["NL", "ES"]:
        for split in ["train", "test"]:
            folder = FIXTURES / "aliexpress_raw" / f"AliExpress_{cc}"
            users = {
                r[0]: r for r in csv.reader((folder / f"{cc.lower()}_user_{split}.csv").open())
            }
            for item in csv.reader((folder / f"{cc.lower()}_item_{split}.csv").open()):
                expected.append((cc, split, item, users[item[0]]))
    assert frame.height == len(expected)
    by_key: dict[tuple, list[dict]] = {}
    for r in frame.iter_rows(named=True):
        by_key.setdefault((r["domain"], r[SOURCE_SPLIT], r["search_id"]), []).append(r)
    for cc, split, item, user in expected:
        rows = by_key[(cc, split, int(item[0]))]
        row = next(r for r in rows if r["numerical_24"] == pytest.approx(float(item[1])))
        label = int(item[48])  # item_49
        assert (row["click"], row["conversion"]) == (int(label >= 1), int(label == 2))
        assert row["categorical_1"] == int(user[1])  # user_2
        assert row["categorical_8"] == int(user[31])  # user_32
        assert row["categorical_10"] == int(item[18])  # item_19
        assert row["numerical_1"] == pytest.approx(float(user[8]))  # user_9
    data = prepared(tmp_path, "aliexpress_raw", *AE_RAW)
    assert data.domain_names == ["ES", "NL"]
    assert data.rows_per_domain("test").tolist() == [
        sum(1 for e in expected if e[:2] == (cc, "test")) for cc in ["ES", "NL"]
    ]


def test_taobao_raw_joins_ads_and_user_profiles(tmp_path):
    source, _ = source_of(tmp_path, "taobao")
    frame = source.scan().collect()
    root = FIXTURES / "taobao"
    samples = list(csv.DictReader((root / "raw_sample.csv").open()))
    ads = {r["adgroup_id"]: r for r in csv.DictReader((root / "ad_feature.csv").open())}
    users = {r["userid"]: r for r in csv.DictReader((root / "user_profile.csv").open())}
    assert frame.height == len(samples) == 240
    for row, raw in zip(frame.iter_rows(named=True), samples):
        assert (row["userid"], row["pid"], row["clk"]) == (
            int(raw["user"]),
            raw["pid"],
            int(raw["clk"]),
        )
        ad = ads[raw["adgroup_id"]]
        assert row["price"] == pytest.approx(float(ad["price"]))
        assert row["brand"] == (None if ad["brand"] == "NULL" else int(ad["brand"]))
        user = users.get(raw["user"])  # users 10, 20, 30 have no profile: nulls (OOV)
        want = None if user is None else int(user["new_user_class_level "])
        assert row["new_user_class_level"] == want
    data = prepared(tmp_path, "taobao")
    assert data.domain_names == ["430539_1007", "430548_1007"]
    pid_counts = frame.get_column("pid").value_counts().sort("pid").get_column("count")
    assert (sum(data.rows_per_domain(s) for s in ("train", "val", "test"))).tolist() == (
        pid_counts.to_list()
    )


def test_taobao_time_split_keeps_the_latest_rows_for_test(tmp_path):
    source, _ = source_of(tmp_path, "taobao")
    parts = source.load().frames
    assert (
        parts["train"].get_column("time_stamp").max() < parts["val"].get_column("time_stamp").min()
    )
    assert (
        parts["val"].get_column("time_stamp").max() < parts["test"].get_column("time_stamp").min()
    )


def test_taobao_fuxictr_and_douban_samples(tmp_path):
    fuxi = prepared(tmp_path, "taobao_fuxictr")
    assert [len(fuxi.splits[s]) for s in ("train", "val", "test")] == [100, 100, 100]
    assert int(fuxi.splits["train"].label.sum()) == 4  # tests/fixtures/taobao_fuxictr/SOURCE.md
    douban = prepared(tmp_path, "douban")
    total = sum(douban.rows_per_domain(s) for s in ("train", "val", "test"))
    assert dict(zip(douban.domain_names, total.tolist())) == {
        "book": 364,
        "movie": 2299,
        "music": 337,
    }


def test_kuairand_concatenates_logs_and_joins_features(tmp_path):
    source, _ = source_of(tmp_path, "kuairand")
    frame = source.scan().collect()
    root = FIXTURES / "kuairand"
    logs = [
        *csv.DictReader((root / "log_standard_4_08_to_4_21_pure.csv").open()),
        *csv.DictReader((root / "log_standard_4_22_to_5_08_pure.csv").open()),
    ]
    users = {r["user_id"]: r for r in csv.DictReader((root / "user_features_pure.csv").open())}
    videos = {
        r["video_id"]: r for r in csv.DictReader((root / "video_features_basic_pure.csv").open())
    }
    assert frame.height == len(logs) == 200
    for row, raw in zip(frame.iter_rows(named=True), logs):
        assert (row["tab"], row["is_click"]) == (int(raw["tab"]), int(raw["is_click"]))
        user, video = users[raw["user_id"]], videos[raw["video_id"]]
        assert row["user_active_degree"] == user["user_active_degree"]
        assert row["follow_user_num_range"] == user["follow_user_num_range"] == "(0,10]"
        assert (row["author_id"], row["video_type"]) == (
            int(video["author_id"]),
            video["video_type"],
        )
    data = prepared(tmp_path, "kuairand")
    assert data.domain_names == sorted({r["tab"] for r in logs}, key=int)


def movielens_by_hand() -> list[dict]:
    root = FIXTURES / "movielens1m"
    users = {
        u[0]: u for u in (x.split("::") for x in (root / "users.dat").read_text().splitlines())
    }
    rows = []
    for line in (root / "ratings.dat").read_text().splitlines():
        uid, mid, rating, _ = line.split("::")
        rows.append({"user": uid, "movie": mid, "rating": int(rating), "user_row": users[uid]})
    return rows


@pytest.mark.parametrize("attribute,position", [("gender", 1), ("age", 2)])
def test_movielens_joins_users_and_movies(tmp_path, attribute, position):
    source, _ = source_of(tmp_path, "movielens1m", f"data.source.domain_attribute={attribute}")
    frame = source.scan().collect()
    raw = movielens_by_hand()
    assert frame.height == len(raw) == 300
    for row, want in zip(frame.iter_rows(named=True), raw):
        assert row["label"] == int(want["rating"] >= 4)
        assert row["domain"] == want["user_row"][position]
    titles = set(frame.get_column("title").to_list())
    assert "Cité des enfants perdus, La (1995)" in titles  # latin-1 read right
    assert "Star Wars: Episode IV - A New Hope (1977)" in titles  # ':' inside a field
    star_wars = frame.filter(pl.col("movie_id") == 4)
    assert set(star_wars.get_column("genre").to_list()) <= {"Action"}
    data = prepared(tmp_path, "movielens1m", f"data.source.domain_attribute={attribute}")
    assert data.domain_names == sorted(
        {w["user_row"][position] for w in raw}, key=float if attribute == "age" else str
    )


def test_describe_changes_with_the_files_and_options(tmp_path):
    root = tmp_path / "ml"
    shutil.copytree(FIXTURES / "movielens1m", root)
    first = MovieLens1MSource(root=str(root)).describe()
    assert MovieLens1MSource(root=str(root)).describe() == first
    assert MovieLens1MSource(root=str(root), domain_attribute="age").describe() != first
    assert MovieLens1MSource(root=str(root), min_positive_rating=5).describe() != first
    with (root / "ratings.dat").open("a") as f:
        f.write("1::1::5::978400000\n")
    assert MovieLens1MSource(root=str(root)).describe() != first
    # and so the preparation cache is not reused
    over = [f"data.source.root={root}"]
    before = prepared(tmp_path, "movielens1m", *over)
    with (root / "ratings.dat").open("a") as f:
        f.write("2::1::5::978400001\n")
    after = prepared(tmp_path, "movielens1m", *over)
    assert after.cache_path != before.cache_path
    assert sum(len(s) for s in after.splits.values()) == 302


def test_missing_root_and_file_name_the_key_and_the_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"data.source.root=.*raw_sample.csv"):
        source_of(tmp_path, "taobao", f"data.source.root={tmp_path / 'nowhere'}")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "raw_sample.csv").write_text("user,time_stamp\n")
    with pytest.raises(DataError, match=r"data.source.ads: .*ad_feature.csv does not exist"):
        source_of(tmp_path, "taobao", f"data.source.root={tmp_path / 'half'}")
    with pytest.raises(DataError, match=r"data.source.XA_train: .*AliExpress_XA/train.csv"):
        source_of(tmp_path, "aliexpress", "data.source.countries=[XA]", "data.source.root=.")


def parse_table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_prepare_command_prints_the_prepared_numbers(tmp_path, capsys):
    over = ["data=taobao", f"data.source.root={FIXTURES / 'taobao'}", f"paths.cache={tmp_path}"]
    data_main(["prepare", *over])
    out = capsys.readouterr().out
    data = build_data(compose_config(over, tmp_path).data, str(tmp_path))
    rows = parse_table(out, "domain")
    assert [r[0] for r in rows] == [*data.domain_names, "all"]
    for s, split in enumerate(("train", "val", "test")):
        t = data.splits[split]
        counts = data.rows_per_domain(split)
        assert [int(r[1 + s]) for r in rows] == [*counts.tolist(), int(counts.sum())]
        rates = [t.label[t.domain == k].float().mean().item() for k in range(data.n_domains)]
        printed = [float(r[4 + s]) for r in rows]
        np.testing.assert_allclose(printed, [*rates, t.label.mean().item()], atol=5e-5)
    vocab = parse_table(out, "field")
    assert vocab == [[c, str(v)] for c, v in zip(data.schema.categorical, data.vocab_sizes)]
    assert str(data.cache_path) in out


def test_prepare_command_fails_with_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"error: data.source.root=.*user_profile.csv"):
        data_main(["prepare", "data=taobao", f"data.source.root={tmp_path / 'no'}"])
    with pytest.raises(SystemExit, match=r"(?s)error: .*criteo.*movielens1m"):  # lists the choices
        data_main(["prepare", "data=criteo"])


# Every release config, with what its fixture needs and the domains it must give.
CONFIGS = {
    "aliccp": ([], 3),
    "aliccp_processed": ([], 3),
    "aliexpress": (ALIEXPRESS, 2),
    "aliexpress_raw": (AE_RAW, 2),
    "taobao": ([], 2),
    "taobao_fuxictr": ([], 2),
    "douban": ([], 3),
    "kuairand": ([], 4),
    "movielens1m": ([], 2),
}


def test_every_release_config_is_listed_here():
    names = {p.stem for p in (FIXTURES.parents[1] / "conf" / "data").glob("*.yaml")}
    assert names - {"synthetic", "tabular"} == set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scan_and_load_agree(tmp_path, name):
    """load() is scan() collected and split: the same rows, each in one split."""
    overrides, n_domains = CONFIGS[name]
    source, cfg = source_of(tmp_path, name, *overrides)
    frame = source.scan().collect()
    schema_cols = {cfg.data.schema.label, *cfg.data.schema.categorical, *cfg.data.schema.dense}
    assert schema_cols <= set(frame.columns)
    parts = source.load().frames
    assert sum(p.height for p in parts.values()) == frame.height
    assert all(p.height > 0 for p in parts.values())
    assert frame.get_column(cfg.data.schema.domain).n_unique() == n_domains


def test_tabular_scan_and_root(tmp_path):
    root = FIXTURES / "taobao_fuxictr"
    files = {"train": "train_sample.csv", "val": "valid_sample.csv", "test": "test_sample.csv"}
    from adasparse_lab.data.sources import TabularSource

    source = TabularSource(root=str(root), **files)
    frame = source.scan().collect()
    assert frame.get_column(SOURCE_SPLIT).value_counts().sort(SOURCE_SPLIT).rows() == [
        ("test", 100),
        ("train", 100),
        ("val", 100),
    ]
    absolute = TabularSource(**{k: str(root / v) for k, v in files.items()})
    assert source.describe() == absolute.describe()  # same files, same cache key
    loaded = source.load().frames["train"]
    assert frame.filter(pl.col(SOURCE_SPLIT) == "train").drop(SOURCE_SPLIT).equals(loaded)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_epoch_on_every_release_fixture(tmp_path, name):
    """The smoke run the studies rely on: data=<name> trains and reports every domain."""
    from adasparse_lab.run.pipeline import train_and_evaluate

    overrides, n_domains = CONFIGS[name]
    cfg = compose_config(
        [f"data={name}", "tracking=none", "train.epochs=1", "latency.enabled=false", *overrides],
        tmp_path,
    )
    result = train_and_evaluate(cfg)
    assert len(result.domains) == n_domains
    assert result.domains.get_column("domain").to_list() == result.data.domain_names


# --- data.storage=mmap: the release readers stream (review finding: they were collected) ---

STREAMED = {"aliccp": [], "aliexpress": ALIEXPRESS, "aliccp_processed": []}


def prepare_reader(tmp: Path, name: str, storage: str, chunk_rows: int):
    from omegaconf import OmegaConf

    from adasparse_lab.data.prepare import prepare
    from adasparse_lab.data.schema import Schema

    source, cfg = source_of(tmp, name, *STREAMED[name])
    schema = Schema.from_config(**OmegaConf.to_container(cfg.data.schema, resolve=True))
    return prepare(source, schema, tmp / storage, storage=storage, chunk_rows=chunk_rows)


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_readers_on_mmap_stream_the_same_split_as_in_memory(tmp_path, name):
    """FileSplit streamed chunk by chunk (val carved out of train with the same draws) gives
    the rows the in-memory split gives, in the same order."""
    from tests.test_data_store import assert_same_values

    streamed = prepare_reader(tmp_path, name, "mmap", chunk_rows=40)
    loaded = prepare_reader(tmp_path, name, "memory", chunk_rows=40)
    assert [len(streamed.splits[s]) for s in ("train", "val", "test")] == [
        len(loaded.splits[s]) for s in ("train", "val", "test")
    ]
    assert len(streamed.splits["val"]) > 0
    assert_same_values(streamed, loaded, dense_atol=1e-5)
    assert streamed.vocab_sizes == loaded.vocab_sizes


def test_a_reader_on_mmap_never_collects_the_whole_table(tmp_path, monkeypatch):
    """Every frame polars materialises while preparing is a chunk (or a narrow aggregate),
    never the whole raw table: memory stays bounded by data chunk_rows."""
    source, _ = source_of(tmp_path, "aliccp")
    table = source.scan().collect()
    heights = []
    real = pl.LazyFrame.collect

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if isinstance(out, pl.DataFrame) and out.width >= table.width - 1:
            heights.append(out.height)
        return out

    monkeypatch.setattr(pl.LazyFrame, "collect", spy)
    data = prepare_reader(tmp_path, "aliccp", "mmap", chunk_rows=20)
    assert sum(len(s) for s in data.splits.values()) == table.height
    assert heights and max(heights) <= 20, heights  # chunks only


def test_file_split_streamed_in_chunks_equals_the_split_at_once(tmp_path):
    from adasparse_lab.data.readers.base import FileSplit
    from adasparse_lab.data.stream import spool_chunks

    n = 1000
    frame = pl.DataFrame({"i": range(n), SOURCE_SPLIT: ["train"] * 800 + ["test"] * 200})
    split = FileSplit(val=0.25, seed=3)
    spool_chunks(iter(frame.iter_slices(37)), split, tmp_path)
    streamed = {
        s: pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / s).glob("*.parquet"))])
        for s in ("train", "val", "test")
    }
    at_once = split(frame)
    for s in ("train", "val", "test"):
        assert streamed[s].equals(at_once[s]), s
    assert 150 < streamed["val"].height < 250
    with pytest.raises(DataError, match="FileSplit needs a 'source_split' column"):
        spool_chunks(iter([frame.drop(SOURCE_SPLIT)]), split, tmp_path / "none")
