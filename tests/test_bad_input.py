"""Bad input, systematically: each row of the table is one bad input and what it must give,
either an error of ours (ConfigError / DataError) whose message names the file, column or key,
or an explicit exclusion that a logged warning names. Never a crash inside polars or torch."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from adasparse_lab.data.build import build_data
from adasparse_lab.data.prepare import prepare
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import RandomSplit, TabularSource, TimeSplit
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.metrics import evaluate_scores
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.study.driver import StudyRunner
from tests.conftest import CONF, compose_config

SCHEMA = Schema(label="y", domain="dom", categorical=("item",), dense=("price",))


def table(n: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "dom": rng.choice(["a", "b"], n),
            "item": rng.choice(["i1", "i2", "i3"], n),
            "price": rng.lognormal(3, 1, n),
            "ts": np.arange(n),
        }
    )


def one_file(tmp: Path, frame: pl.DataFrame | bytes | None = None, name="log.csv", **source):
    """Write ``frame`` (or raw bytes) and return a one-file source split at random."""
    path = tmp / name
    frame = table() if frame is None else frame
    if isinstance(frame, bytes):
        path.write_bytes(frame)
    else:
        frame.write_csv(path)
    return TabularSource(path=str(path), split=source.pop("split", RandomSplit()), **source)


def split_files(tmp: Path, train: pl.DataFrame, val: pl.DataFrame, test: pl.DataFrame):
    for name, frame in (("train", train), ("val", val), ("test", test)):
        frame.write_csv(tmp / f"{name}.csv")
    return TabularSource(**{s: str(tmp / f"{s}.csv") for s in ("train", "val", "test")})


def prep(source, schema: Schema = SCHEMA, **kwargs) -> PreparedData:
    return prepare(source, schema, None, **kwargs)


def tiny_cfg(tmp: Path, *overrides: str):
    return compose_config(["tracking=none", *overrides], tmp)


def study_space(tmp: Path, *extra: str) -> None:
    overrides = ["+study=quick", f"paths.studies={tmp}/studies", *extra]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more])).validate()


def with_price(frame: pl.DataFrame, row: int, value: float) -> pl.DataFrame:
    price = frame["price"].to_numpy().copy()
    price[row] = value
    return frame.with_columns(price=pl.Series(price))


def one_class_domain(tmp: Path):
    """Domain 'b' has only negatives in this evaluation split: no AUC, excluded from means."""
    label = np.array([0, 1, 0, 1, 0, 0, 0])
    logit = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.4, 0.3])
    domain = np.array([0, 0, 0, 0, 1, 1, 1])
    m = evaluate_scores(label, logit, domain, ["a", "b"], split="val")
    assert m.excluded == ["b"] and m.mean_domain_auc == 1.0  # the mean of 'a' alone
    return m


@dataclass(frozen=True)
class Case:
    run: Callable[[Path], object]
    error: type[Exception] | None  # None: no error, but a logged warning matching `match`
    match: str


CASES: dict[str, Case] = {
    # -- files ------------------------------------------------------------------------------
    "empty file": Case(
        lambda t: prep(one_file(t, b"", "empty.csv")), DataError, r"empty.csv.*is empty"
    ),
    "header only": Case(
        lambda t: prep(one_file(t, b"y,dom,item,price\n", "head.csv")),
        DataError,
        r"head.csv.*has a header but no rows",
    ),
    "missing file": Case(
        lambda t: TabularSource(path=str(t / "nowhere.csv"), split=RandomSplit()),
        DataError,
        r"does not exist: .*nowhere.csv",
    ),
    "unknown file type": Case(
        lambda t: prep(one_file(t, b"x", "log.xlsx")), DataError, r"log.xlsx: unknown file type"
    ),
    "corrupt parquet": Case(
        lambda t: prep(one_file(t, b"PAR1 not really", "log.parquet")),
        DataError,
        r"log.parquet: cannot be read",
    ),
    "non-UTF-8 CSV": Case(
        lambda t: prep(one_file(t, b"y,dom,item,price\n1,a,caf\xe9,1.0\n", "latin.csv")),
        DataError,
        r"latin.csv: not valid UTF-8",
    ),
    "duplicate column names": Case(
        lambda t: prep(one_file(t, b"y,dom,item,item,price\n1,a,x,y,1\n0,b,x,y,2\n", "dup.csv")),
        DataError,
        r"dup.csv: duplicate column name\(s\) \['item'\]",
    ),
    "wrong separator": Case(
        lambda t: prep(one_file(t, table().write_csv(separator=";").encode(), "semi.csv")),
        DataError,
        r"semi.csv .*missing column.*data.source.separator",
    ),
    "missing column": Case(
        lambda t: prep(one_file(t, table().drop("price"))),
        DataError,
        r"log.csv \(train split\): missing column\(s\) \['price'\]",
    ),
    # -- labels -----------------------------------------------------------------------------
    "labels yes/no": Case(
        lambda t: prep(one_file(t, table().with_columns(y=pl.lit("yes")))),
        DataError,
        r"log.csv .*label column 'y' must hold only 0 and 1.*'yes'",
    ),
    "label 2": Case(
        lambda t: prep(one_file(t, table().with_columns(y=pl.lit(2)))),
        DataError,
        r"label column 'y' must hold only 0 and 1.*\[2\]",
    ),
    "label 0.5": Case(
        lambda t: prep(one_file(t, table().with_columns(y=pl.lit(0.5)))),
        DataError,
        r"label column 'y' must hold only 0 and 1.*\[0.5\]",
    ),
    "null label": Case(
        lambda t: prep(split_files(t, table().with_columns(y=pl.lit(None)), table(), table())),
        DataError,
        r"train.csv: label column 'y' has 300 nulls",
    ),
    # -- domains ----------------------------------------------------------------------------
    "null domain": Case(
        lambda t: prep(
            split_files(t, table(), table().with_columns(dom=pl.lit(None, pl.String)), table())
        ),
        DataError,
        r"val.csv: domain column 'dom' has 300 nulls",
    ),
    "domain only in test": Case(
        lambda t: prep(split_files(t, table(), table(), table().with_columns(dom=pl.lit("z")))),
        None,
        r"domains with no training rows.*\['z'\]",
    ),
    "one class in a domain at evaluation": Case(
        one_class_domain, None, r"val split: domain\(s\) \['b'\] have a single class; excluded"
    ),
    # -- features ---------------------------------------------------------------------------
    "inf in a dense column": Case(
        lambda t: prep(one_file(t, with_price(table(), 3, np.inf))),
        DataError,
        r"log.csv \(train split\): dense column 'price' has 1 infinite value",
    ),
    "NaN in a dense column": Case(
        lambda t: prep(one_file(t, with_price(table(), 3, np.nan))),
        None,
        r"log.csv \(train split\): dense column 'price' has 1 missing or NaN value.*train mean",
    ),
    "dense column with no values": Case(
        lambda t: prep(one_file(t, table().with_columns(price=pl.lit(None, pl.Float64)))),
        DataError,
        r"log.csv \(train split\): dense column 'price' has no values",
    ),
    "dense column of strings": Case(
        lambda t: prep(one_file(t, table().with_columns(price=pl.lit("cheap")))),
        DataError,
        r"dense column 'price' is String, not numeric",
    ),
    "categorical column of floats": Case(
        lambda t: prep(one_file(t), Schema(label="y", domain="dom", categorical=("price",))),
        DataError,
        r"log.csv \(train split\): categorical column 'price' holds non-integer numbers .*dense",
    ),
    "vocabulary above the limit": Case(
        lambda t: prep(
            one_file(t), Schema(label="y", domain="dom", categorical=("ts",)), max_vocab=100
        ),
        DataError,
        r"categorical column 'ts' has \d+ distinct values in train, above data.max_vocab=100",
    ),
    "vocabulary above data.max_vocab (config)": Case(
        lambda t: build_data(tiny_cfg(t, "data.max_vocab=100").data, None),
        DataError,
        r"categorical column 'user_id' has \d+ distinct values in train, above data.max_vocab=100",
    ),
    # -- splits -----------------------------------------------------------------------------
    "split with no rows": Case(
        lambda t: prep(one_file(t, table(4), split=TimeSplit("ts", val=0.1, test=0.3))),
        DataError,
        r"log.csv \(val split\): no rows",
    ),
    "time split on a missing column": Case(
        lambda t: prep(one_file(t, split=TimeSplit("when"))),
        DataError,
        r"data.split.column 'when' is not a column",
    ),
    "split fractions above 1": Case(
        lambda t: RandomSplit(val=0.6, test=0.5), ConfigError, r"val=0.6 and test=0.5"
    ),
    # -- config -----------------------------------------------------------------------------
    "unknown config key train.epoch": Case(
        lambda t: tiny_cfg(t, "train.epoch=3"), ConfigCompositionException, r"train.epoch"
    ),
    "added unknown key +train.epoch": Case(
        lambda t: build_components(tiny_cfg(t, "+train.epoch=3")), ConfigError, r"train: .*'epoch'"
    ),
    "unknown model key model.hiden_dims": Case(
        lambda t: tiny_cfg(t, "model.hiden_dims=[8]"),
        ConfigCompositionException,
        r"model.hiden_dims",
    ),
    "added unknown key +model.hiden_dims": Case(
        lambda t: build_model(tiny_cfg(t, "+model.hiden_dims=[8]").model, prep(one_file(t)), None),
        ConfigError,
        r"model: .*'hiden_dims'",
    ),
    "unknown data source key": Case(
        lambda t: build_data(tiny_cfg(t, "+data.source.n_row=10").data, None),
        ConfigError,
        r"data.source: .*n_row",
    ),
    "negative epoch count": Case(
        lambda t: build_components(tiny_cfg(t, "train.epochs=-1")),
        ConfigError,
        r"train.epochs=-1 must be >= 1",
    ),
    "study space on a key that does not exist": Case(
        lambda t: study_space(t, "+study.space.x={path:train.lrr,type:float,low:0.1,high:1}"),
        ConfigError,
        r"study.space.x: unknown parameter path 'train.lrr'",
    ),
    "label also a feature": Case(
        lambda t: Schema(label="y", domain="dom", categorical=("y",)),
        ConfigError,
        r"data.schema.label 'y' is also listed as a feature",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, caplog):
    case = CASES[name]
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            case.run(tmp_path)
        return
    with caplog.at_level(logging.WARNING):
        case.run(tmp_path)
    assert any(
        r.levelno == logging.WARNING and re.search(case.match, r.getMessage())
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_the_table_is_systematic():
    assert len(CASES) >= 20


def test_nan_in_a_dense_column_becomes_the_train_mean(tmp_path):
    data = prep(one_file(tmp_path, with_price(table(), 0, np.nan), split=TimeSplit("ts")))
    assert float(data.splits["train"].dense[0, 0]) == 0.0  # standardised train mean
    assert bool(data.splits["train"].dense.isfinite().all())


def test_integer_ids_read_as_floats_in_one_file_keep_their_codes(tmp_path):
    """A null makes a CSV reader type an id column as float in one file (1.0 vs 1): the codes
    must still match the train vocabulary instead of silently becoming OOV."""
    train = table().with_columns(item=pl.Series(np.arange(300) % 7))
    val = train.with_columns(
        item=pl.when(pl.col("ts") == 0).then(None).otherwise(pl.col("item")).cast(pl.Float64)
    )
    data = prep(
        split_files(tmp_path, train, val, train),
        Schema(label="y", domain="dom", categorical=("item",)),
    )
    codes = data.splits["val"].cat[:, 1]
    assert int((codes == 0).sum()) == 1  # only the null row is OOV
    assert data.splits["val"].cat[1:, 1].tolist() == data.splits["train"].cat[1:, 1].tolist()
    # NaN in a float id column (parquet) is missing too, not an error
    val.with_columns(item=pl.col("item").fill_null(float("nan"))).write_parquet(
        tmp_path / "v.parquet"
    )
    source = TabularSource(
        train=str(tmp_path / "train.csv"),
        val=str(tmp_path / "v.parquet"),
        test=str(tmp_path / "test.csv"),
    )
    again = prep(source, Schema(label="y", domain="dom", categorical=("item",)))
    assert torch.equal(again.splits["val"].cat, data.splits["val"].cat)
