"""Preparation: validate, encode vocabularies, normalise dense features, cache as parquet.

Encoding rules
- Categorical values seen in train at least ``min_freq`` times get codes 1..V (most frequent
  first); everything else, nulls and values unseen in train included, maps to 0 (OOV).
- The domain column is a label set, not a learned feature: its vocabulary is the union of the
  splits, so every evaluated domain has a name and an index (``domain_idx``, 0..K-1), in
  natural order (``domain_order``: "2" before "10").
- Dense features: signed log1p (optional), then standardised with train mean and std; nulls
  become 0 (the train mean).
The result is cached under ``cache_dir/<hash>`` and reloaded on later runs. The hash covers
everything that shapes the result: the source's description (synthetic spec or files by path,
size and mtime, separator, the split and its seed/fractions/column), the schema, min_freq,
dense_log1p and ``ENCODING_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import SPLITS, RawData
from adasparse_lab.errors import DataError

log = logging.getLogger(__name__)
# Part of the cache key: bump it whenever the encoding rules or the cached layout change
# (vocabulary order, OOV handling, dense normalisation, domain order, columns), so that old
# caches are ignored instead of silently reused. 2: domain names in natural order.
ENCODING_VERSION = 2
# Largest vocabulary of one categorical column: 10M ids x D=16 floats is 640 MB of embedding
# (2 GB with Adam's moments); a column above it is refused with a message (data.max_vocab).
MAX_VOCAB = 10_000_000


@dataclass
class TensorSplit:
    """One split as in-memory tensors. N rows, F categorical fields, Dn dense features."""

    cat: torch.Tensor  # [N, F] int64 codes, 0 = OOV
    dense: torch.Tensor  # [N, Dn] float32, standardised
    label: torch.Tensor  # [N] float32 in {0, 1}
    domain: torch.Tensor  # [N] int64 domain index 0..K-1
    user: torch.Tensor | None = None  # [N] int64 user key (GAUC), if the schema has one
    p_true: torch.Tensor | None = None  # [N] float64 true click probability (synthetic)

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass
class PreparedData:
    """What every downstream module needs: tensors per split and the sizes models derive from."""

    schema: Schema
    splits: dict[str, TensorSplit]
    vocab_sizes: list[int]  # per categorical field, including the OOV row
    domain_names: list[str]
    domain_groups: dict[str, int] | None
    cache_path: Path | None = None

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)

    def domain_feature_index(self) -> list[int]:
        """Positions of the domain-aware fields among the categorical fields."""
        return [self.schema.categorical.index(c) for c in self.schema.domain_features]

    def rows_per_domain(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.splits[split].domain.numpy(), minlength=self.n_domains)


def config_hash(description: dict) -> str:
    blob = json.dumps({"v": ENCODING_VERSION, **description}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def domain_order(name: str) -> tuple:
    """Sort key of domain names: numbers by value ("2" before "10"), other names with their
    digit runs compared as numbers ("d2" before "d10"), numbers before other names."""
    try:
        value = float(name)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return (0, value, name)
    parts = re.split(r"(\d+)", name)  # text, digits, text, ...: odd positions are digit runs
    return (1, tuple(int(p) if i % 2 else p for i, p in enumerate(parts)))


def _vocab(train: pl.DataFrame, col: str, min_freq: int) -> pl.DataFrame:
    counts = train.get_column(col).drop_nulls().value_counts(name="n")
    kept = counts.filter(pl.col("n") >= min_freq).sort(["n", col], descending=[True, False])
    return kept.select(col).with_row_index("code", offset=1)


def _encode_column(frame: pl.DataFrame, col: str, vocab: pl.DataFrame) -> pl.Series:
    values = vocab.get_column(col)
    src = frame.get_column(col)
    if src.dtype != values.dtype:  # e.g. an int column read as str in one file
        src, values = src.cast(pl.String), values.cast(pl.String)
    return src.replace_strict(
        values, vocab.get_column("code"), default=0, return_dtype=pl.Int64
    ).fill_null(0)


def _dense_matrix(frame: pl.DataFrame, cols: tuple[str, ...], log1p: bool) -> np.ndarray:
    if not cols:
        return np.zeros((frame.height, 0), dtype=np.float64)
    exprs = [pl.col(c).cast(pl.Float64) for c in cols]
    if log1p:
        exprs = [e.sign() * e.abs().log1p() for e in exprs]
    return frame.select(exprs).to_numpy()


def integral_codes(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """Integral float codes (an id column typed as float in one file because of a null: 1.0)
    cast to Int64, so that they match the other files' vocabularies."""
    floats = [c for c in schema.categorical if c in frame.columns and frame.schema[c].is_float()]
    return frame.with_columns(pl.col(c).fill_nan(None).cast(pl.Int64) for c in floats)


def _validated(raw: RawData, schema: Schema) -> dict[str, pl.DataFrame]:
    """Every split checked against the schema, with integral float codes cast to Int64."""
    frames = {}
    for name in SPLITS:
        if name not in raw.frames:
            raise DataError(f"data source gave no {name!r} split (got {sorted(raw.frames)})")
        frame = raw.frames[name]
        schema.validate(frame, (raw.origins or {}).get(name, f"{name} split"))
        frames[name] = integral_codes(frame, schema)
    return frames


def _vocabularies(
    frames: dict[str, pl.DataFrame],
    schema: Schema,
    min_freq: int,
    max_vocab: int | None,
    origin: str,
) -> dict[str, pl.DataFrame]:
    """Per categorical column, its vocabulary (codes 1..V); the domain's spans every split."""
    all_domains = pl.concat([frames[s].get_column(schema.domain).cast(pl.String) for s in SPLITS])
    domain_names = sorted(all_domains.unique().to_list(), key=domain_order)
    vocabs = {
        schema.domain: pl.DataFrame({schema.domain: domain_names}).with_row_index("code", offset=1)
    }
    for col in schema.categorical:
        if col == schema.domain:
            continue
        vocabs[col] = _vocab(frames["train"], col, min_freq)
        if max_vocab is not None and vocabs[col].height > max_vocab:
            raise DataError(
                f"{origin}: categorical column {col!r} has {vocabs[col].height} distinct values "
                f"in train, above data.max_vocab={max_vocab} (its embedding table would not fit "
                "in memory): raise data.min_freq, hash the column into fewer buckets, or raise "
                "data.max_vocab"
            )
    return vocabs


@dataclass
class Encoder:
    """Everything that turns raw feature columns into model inputs, learned on train:
    per categorical column its vocabulary (a frame of the column's values and their codes
    1..V), and the dense features' train mean and std (after the optional signed log1p)."""

    vocabs: dict[str, pl.DataFrame]
    mean: np.ndarray  # [Dn]
    std: np.ndarray  # [Dn], zeros replaced by 1
    dense_log1p: bool


def fit_encoder(
    frames: dict[str, pl.DataFrame],
    schema: Schema,
    min_freq: int,
    dense_log1p: bool,
    max_vocab: int | None = None,
    origin: str = "train split",
) -> Encoder:
    """The encoder of validated split frames (vocabularies from train, the domain's from all)."""
    vocabs = _vocabularies(frames, schema, min_freq, max_vocab, origin)
    dense_train = _dense_matrix(frames["train"], schema.dense, dense_log1p)
    mean = np.nanmean(dense_train, axis=0) if dense_train.size else np.zeros(0)
    std = np.nanstd(dense_train, axis=0) if dense_train.size else np.zeros(0)
    return Encoder(vocabs, mean, np.where(std > 0, std, 1.0), dense_log1p)


def encode_features(frame: pl.DataFrame, schema: Schema, encoder: Encoder) -> pl.DataFrame:
    """Feature columns of raw rows as codes (c0.., 0 = OOV) and standardised dense (x0..,
    missing = 0, the train mean): the same rules for training and serving."""
    frame = frame.with_columns(pl.col(schema.domain).cast(pl.String))
    cols = {
        f"c{i}": _encode_column(frame, c, encoder.vocabs[c])
        for i, c in enumerate(schema.categorical)
    }
    dense = (_dense_matrix(frame, schema.dense, encoder.dense_log1p) - encoder.mean) / encoder.std
    table = pl.DataFrame(cols, schema={name: pl.Int64 for name in cols})
    return table.with_columns(
        pl.Series(f"x{j}", np.nan_to_num(dense[:, j], nan=0.0).astype(np.float32))
        for j in range(dense.shape[1])
    )


def _encode_split(frame: pl.DataFrame, schema: Schema, encoder: Encoder) -> pl.DataFrame:
    """One split as codes (c0..), standardised dense (x0..), label, domain index, user, p_true."""
    table = encode_features(frame, schema, encoder).with_columns(
        label=frame.get_column(schema.label).cast(pl.Float32),
        domain=pl.col(f"c{schema.categorical.index(schema.domain)}") - 1,
    )
    if schema.user is not None:
        table = table.with_columns(
            user=frame.get_column(schema.user).hash().reinterpret(signed=True)
        )
    if "p_true" in frame.columns:
        table = table.with_columns(p_true=frame.get_column("p_true").cast(pl.Float64))
    return table


def encode(
    raw: RawData,
    schema: Schema,
    min_freq: int,
    dense_log1p: bool,
    max_vocab: int | None = None,
) -> dict:
    """Encode raw frames into tables of codes per split plus vocabulary metadata."""
    frames = _validated(raw, schema)
    train_origin = (raw.origins or {}).get("train", "train split")
    encoder = fit_encoder(frames, schema, min_freq, dense_log1p, max_vocab, train_origin)
    return {
        "splits": {s: _encode_split(frames[s], schema, encoder) for s in SPLITS},
        "domain_names": encoder.vocabs[schema.domain].get_column(schema.domain).to_list(),
        "vocab_sizes": [encoder.vocabs[c].height + 1 for c in schema.categorical],
        "encoder": encoder,
    }


def _to_tensors(table: pl.DataFrame, n_cat: int, n_dense: int) -> TensorSplit:
    cat = table.select([f"c{i}" for i in range(n_cat)]).to_numpy().astype(np.int64)
    dense = (
        table.select([f"x{j}" for j in range(n_dense)]).to_numpy().astype(np.float32)
        if n_dense
        else np.zeros((table.height, 0), dtype=np.float32)
    )
    return TensorSplit(
        cat=torch.from_numpy(np.ascontiguousarray(cat)),
        dense=torch.from_numpy(np.ascontiguousarray(dense)),
        label=torch.from_numpy(table.get_column("label").to_numpy().copy()),
        domain=torch.from_numpy(table.get_column("domain").to_numpy().astype(np.int64)),
        user=torch.from_numpy(table.get_column("user").to_numpy().copy())
        if "user" in table.columns
        else None,
        p_true=torch.from_numpy(table.get_column("p_true").to_numpy().copy())
        if "p_true" in table.columns
        else None,
    )


def _write_cache(path: Path, tables: dict[str, pl.DataFrame], meta: dict) -> None:
    """Write into a temporary folder and rename it into place, so that a concurrent worker
    never reads a half-written cache (whoever renames first wins; the other copy is dropped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    for split, table in tables.items():
        table.write_parquet(tmp / f"{split}.parquet")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    try:
        tmp.rename(path)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(
    source,
    schema: Schema,
    cache_dir: str | Path | None,
    min_freq: int = 1,
    dense_log1p: bool = True,
    max_vocab: int | None = MAX_VOCAB,
) -> PreparedData:
    """Load from cache when the data config is unchanged, else encode and write the cache."""
    description = {
        "source": type(source).__name__,
        "source_args": source.describe(),
        "schema": schema.__dict__,
        "min_freq": min_freq,
        "dense_log1p": dense_log1p,
    }
    key = config_hash(description)
    path = Path(cache_dir) / key if cache_dir is not None else None
    meta_file = path / "meta.json" if path is not None else None
    if meta_file is not None and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        tables = {s: pl.read_parquet(path / f"{s}.parquet") for s in SPLITS}
        log.info("loaded prepared data from cache %s", path)
    else:
        t0 = time.perf_counter()
        raw = source.load()
        enc = encode(raw, schema, min_freq, dense_log1p, max_vocab)
        tables = enc["splits"]
        meta = {
            "vocab_sizes": enc["vocab_sizes"],
            "domain_names": enc["domain_names"],
            "domain_groups": raw.domain_groups,
            "description": description,
        }
        if path is not None:
            _write_cache(path, tables, meta)
        log.info("prepared data in %.1fs (cache: %s)", time.perf_counter() - t0, path)
    splits = {
        s: _to_tensors(t, len(schema.categorical), len(schema.dense)) for s, t in tables.items()
    }
    data = PreparedData(
        schema=schema,
        splits=splits,
        vocab_sizes=meta["vocab_sizes"],
        domain_names=meta["domain_names"],
        domain_groups=meta["domain_groups"],
        cache_path=path,
    )
    empty = [d for d, n in zip(data.domain_names, data.rows_per_domain("train")) if n == 0]
    if empty:
        log.warning("domains with no training rows (their embedding stays untrained): %s", empty)
    return data


def source_encoder(
    source,
    schema: Schema,
    min_freq: int = 1,
    dense_log1p: bool = True,
    max_vocab: int | None = MAX_VOCAB,
) -> tuple[Encoder, RawData]:
    """The encoder ``prepare`` applies to ``source`` (re-read: the cache holds codes only),
    and the raw data it was fitted on."""
    raw = source.load()
    frames = _validated(raw, schema)
    origin = (raw.origins or {}).get("train", "train split")
    return fit_encoder(frames, schema, min_freq, dense_log1p, max_vocab, origin), raw
