"""Preparation: validate, encode vocabularies, normalise dense features, store as columns.

Encoding rules
- Categorical values seen in train at least ``min_freq`` times get codes 1..V (most frequent
  first); everything else, nulls and values unseen in train included, maps to 0 (OOV).
- The domain column is a label set, not a learned feature: its vocabulary is the union of the
  splits, so every evaluated domain has a name and an index (``domain_idx``, 0..K-1), in
  natural order (``domain_order``: "2" before "10").
- Dense features: signed log1p (optional), then standardised with train mean and std; nulls
  become 0 (the train mean).
Streaming: rows come as chunks (``source.load()`` sliced, the chunked synthetic generator, or
``source.scan()`` spooled to parquet when data.storage='mmap', see ``data.stream``);
vocabularies are streaming ``group_by`` counts, dense statistics streaming mean/std (numpy
over the column when the source was loaded in memory), and chunks are encoded straight into
the store (``data.store``), so memory does not grow with the rows. ``storage`` picks how the
store is read: in RAM, memory-mapped, or auto (mmap above ``store.AUTO_MEMORY_BYTES``).
The result is stored under ``cache_dir/<hash>`` and reloaded on later runs. The hash covers
everything that shapes the result: the source's description (synthetic spec or files by path,
size and mtime, separator, the split and its seed/fractions/column, the reader's version),
the schema, min_freq, dense_log1p, the preparation route (``preparation_route``: loaded in
memory or scanned, whose dense statistics can differ in the last bits) and ``ENCODING_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from adasparse_lab.data.prepared import PreparedData, TensorSplit
from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import SOURCE_SPLIT, SPLITS, RawData
from adasparse_lab.data.store import (
    BLOCK_ROWS,
    StoreWriter,
    check_storage,
    domain_dtype,
    load_column,
    preparation_lock,
    read_meta,
    resolve_storage,
)
from adasparse_lab.data.stream import scan_chunks, spool_chunks
from adasparse_lab.data.synthetic import SyntheticSpec, generate_chunks
from adasparse_lab.errors import DataError

log = logging.getLogger(__name__)
# Part of the cache key: bump it whenever the encoding rules or the cached layout change
# (vocabulary order, OOV handling, dense normalisation, domain order, columns), so that old
# caches are ignored instead of silently reused. 2: domain names in natural order.
# 3: the .npy column store (data.store) replaces parquet tables. 4: a constant dense column's
# rounding-noise std (1e-17) counts as 0 (scale 1); the key names the preparation route.
ENCODING_VERSION = 4
# (Not bumped for the store's encoder/ folder: codes are unchanged; a store written before
# it is still read, and export re-fits its encoder from the source: store_encoder.)
# Rows per encoded chunk: bounds preparation memory (~100 bytes a row while encoding).
CHUNK_ROWS = 1_000_000
# Largest vocabulary of one categorical column: 10M ids x D=16 floats is 640 MB of embedding
# (2 GB with Adam's moments); a column above it is refused with a message (data.max_vocab).
MAX_VOCAB = 10_000_000
# A dense column whose std is below this times max(|mean|, 1) is constant: its scale is 1.
CONSTANT_STD = 1e-12


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


@dataclass
class RawStream:
    """Raw rows per split, readable twice: lazily (counts, vocabularies, dense statistics) and
    as an ordered stream of chunks (encoding). ``exact``: the frames are in memory, so the dense
    statistics are computed as before the store existed (numpy over the whole column)."""

    lazy: dict[str, pl.LazyFrame]
    chunks: Callable[[str], Iterator[pl.DataFrame]]
    domain_groups: dict[str, int] | None
    origins: dict[str, str]
    exact: bool


def _origins(raw_origins: dict[str, str] | None) -> dict[str, str]:
    return {s: (raw_origins or {}).get(s, f"{s} split") for s in SPLITS}


def _from_frames(raw: RawData, chunk_rows: int) -> RawStream:
    missing = [s for s in SPLITS if s not in raw.frames]
    if missing:
        raise DataError(f"data source gave no {missing[0]!r} split (got {sorted(raw.frames)})")
    return RawStream(
        lazy={s: raw.frames[s].lazy() for s in SPLITS},
        chunks=lambda s: raw.frames[s].iter_slices(chunk_rows),
        domain_groups=raw.domain_groups,
        origins=_origins(raw.origins),
        exact=True,
    )


def _from_spool(spool: Path, domain_groups, origins) -> RawStream:
    """Split-tagged chunk files ``spool/<split>/<k>.parquet`` (written by ``spool_*``)."""

    def files(split: str) -> list[Path]:
        return sorted((spool / split).glob("*.parquet"))

    empty = [s for s in SPLITS if not files(s)]
    if empty:
        raise DataError(f"{origins.get(empty[0], empty[0])}: no rows")
    return RawStream(
        lazy={s: pl.scan_parquet(files(s)) for s in SPLITS},
        chunks=lambda s: (pl.read_parquet(f) for f in files(s)),
        domain_groups=domain_groups,
        origins=_origins(origins),
        exact=False,
    )


def preparation_route(source, storage: str) -> str:
    """How ``prepare`` reads ``source``, part of the cache key (the routes' dense statistics,
    numpy over an in-memory column vs polars' streaming mean/std, can differ in the last bits,
    so a store prepared one way is not served for the other): 'generate' (the chunked
    synthetic generator, whatever the storage), 'scan' (data.storage=mmap on a source with
    ``scan()``, split as it streams: by its splitter, else by the ``source_split`` column of
    per-split files) or 'load' (``source.load()``, in memory)."""
    spec = getattr(source, "spec", None)
    split = getattr(source, "split", None)
    if isinstance(spec, SyntheticSpec) and spec.chunk_rows and split is not None:
        return "generate"
    if storage != "mmap" or not hasattr(source, "scan"):
        return "load"
    if split is not None:
        return "scan"
    return "scan" if SOURCE_SPLIT in source.scan().collect_schema().names() else "load"


def _source_stream(source, route: str, spool: Path, chunk_rows: int) -> RawStream:
    """The source's rows along ``route`` (see ``preparation_route``): spooled to per-split
    chunk files (data.stream) when generated or scanned, else loaded in memory."""
    spec = getattr(source, "spec", None)
    groups = spec.domain_groups() if isinstance(spec, SyntheticSpec) else None
    if route == "generate":
        spool_chunks(generate_chunks(spec), source.split, spool)
        return _from_spool(spool, groups, {})
    if route == "scan":
        where = next(
            (
                str(v)
                for v in (getattr(source, a, None) for a in ("root", "path"))
                if v and isinstance(v, (str, Path))
            ),
            type(source).__name__,
        )
        chunks = scan_chunks(source.scan(), spool / "raw", chunk_rows)
        spool_chunks(chunks, getattr(source, "split", None), spool)
        return _from_spool(spool, groups, {s: f"{where} ({s} split)" for s in SPLITS})
    return _from_frames(source.load(), chunk_rows)


def _integral_exprs(schema: Schema, frame_schema: pl.Schema) -> list[pl.Expr]:
    """Integral float codes (an id column typed as float in one file because of a null: 1.0)
    cast to Int64, so that they match the other files' vocabularies."""
    floats = [c for c in schema.categorical if c in frame_schema and frame_schema[c].is_float()]
    return [pl.col(c).fill_nan(None).cast(pl.Int64) for c in floats]


def _float_codes(schema: Schema, frame_schema: pl.Schema) -> list[pl.Expr]:
    """The integral codes (``_integral_exprs``) and the domain as a string (a label set)."""
    return [*_integral_exprs(schema, frame_schema), pl.col(schema.domain).cast(pl.String)]


def _vocab(lazy: pl.LazyFrame, col: str, min_freq: int) -> pl.DataFrame:
    """Codes 1..V of the values seen >= min_freq times, most frequent first (ties by value):
    a streaming group_by, memory bounded by the number of distinct values."""
    counts = lazy.select(col).drop_nulls().group_by(col).agg(pl.len().alias("n"))
    kept = counts.filter(pl.col("n") >= min_freq).sort(["n", col], descending=[True, False])
    return kept.select(col).collect(engine="streaming").with_row_index("code", offset=1)


def _typed(stream: RawStream, schema: Schema) -> dict[str, pl.LazyFrame]:
    return {
        s: lf.with_columns(_float_codes(schema, lf.collect_schema()))
        for s, lf in stream.lazy.items()
    }


def _vocabularies(
    lazy: dict[str, pl.LazyFrame], schema: Schema, min_freq: int, max_vocab, origin: str
) -> dict[str, pl.DataFrame]:
    """Per categorical column, its vocabulary (codes 1..V); the domain's spans every split."""
    domains = pl.concat(
        [lf.select(schema.domain).unique().collect(engine="streaming") for lf in lazy.values()]
    ).get_column(schema.domain)
    domain_names = sorted(domains.unique().to_list(), key=domain_order)
    vocabs = {
        schema.domain: pl.DataFrame({schema.domain: domain_names}).with_row_index("code", offset=1)
    }
    for col in schema.categorical:
        if col == schema.domain:
            continue
        vocabs[col] = _vocab(lazy["train"], col, min_freq)
        if max_vocab is not None and vocabs[col].height > max_vocab:
            raise DataError(
                f"{origin}: categorical column {col!r} has {vocabs[col].height} distinct values "
                f"in train, above data.max_vocab={max_vocab} (its embedding table would not fit "
                "in memory): raise data.min_freq, hash the column into fewer buckets, or raise "
                "data.max_vocab"
            )
    return vocabs


def _dense_exprs(cols: tuple[str, ...], log1p: bool) -> list[pl.Expr]:
    exprs = [pl.col(c).cast(pl.Float64) for c in cols]
    if log1p:
        exprs = [(e.sign() * e.abs().log1p()).alias(c) for e, c in zip(exprs, cols)]
    return exprs


def _dense_matrix(frame: pl.DataFrame, cols: tuple[str, ...], log1p: bool) -> np.ndarray:
    if not cols:
        return np.zeros((frame.height, 0), dtype=np.float64)
    return frame.select(_dense_exprs(cols, log1p)).to_numpy()


def _dense_scale(stream: RawStream, schema: Schema, log1p: bool) -> tuple:
    """Train mean and std of each (log1p'd) dense feature, NaN and nulls ignored; the std of a
    constant column (0 up to rounding, see CONSTANT_STD) -> 1.
    In memory: numpy over the column (as before the store); streamed: polars' streaming
    mean/std, equal up to float rounding."""
    cols = schema.dense
    if not cols:
        return np.zeros(0), np.ones(0)
    if stream.exact:
        dense = _dense_matrix(stream.lazy["train"].collect(), cols, log1p)
        mean, std = np.nanmean(dense, axis=0), np.nanstd(dense, axis=0)
    else:
        values = [e.fill_nan(None) for e in _dense_exprs(cols, log1p)]
        stats = (
            stream.lazy["train"]
            .select([v.mean().alias(f"m{j}") for j, v in enumerate(values)]
                    + [v.std(ddof=0).alias(f"s{j}") for j, v in enumerate(values)])
            .collect(engine="streaming")
        )  # fmt: skip
        mean = np.array([stats[f"m{j}"][0] for j in range(len(cols))], dtype=np.float64)
        std = np.array([stats[f"s{j}"][0] for j in range(len(cols))], dtype=np.float64)
    # a constant column's std is rounding noise (~1e-17 relative), not 0: dividing by it would
    # blow the noise up to O(1) values, differently on each route
    constant = ~(std > CONSTANT_STD * np.maximum(np.abs(mean), 1.0))
    return mean, np.where(constant, 1.0, std)


@dataclass
class Encoder:
    """Everything that turns raw feature columns into model inputs, learned on train:
    per categorical column its vocabulary (a frame of the column's values and their codes
    1..V), and the dense features' train mean and std (after the optional signed log1p)."""

    vocabs: dict[str, pl.DataFrame]
    mean: np.ndarray  # [Dn]
    std: np.ndarray  # [Dn], zeros replaced by 1
    dense_log1p: bool


def _fit_stream_encoder(stream: RawStream, schema: Schema, settings: dict) -> Encoder:
    """Vocabularies (streaming group_by) and dense statistics of a raw stream."""
    vocabs = _vocabularies(
        _typed(stream, schema),
        schema,
        settings["min_freq"],
        settings["max_vocab"],
        stream.origins["train"],
    )
    mean, std = _dense_scale(stream, schema, settings["dense_log1p"])
    return Encoder(vocabs, mean, std, settings["dense_log1p"])


def fit_encoder(
    frames: dict[str, pl.DataFrame],
    schema: Schema,
    min_freq: int,
    dense_log1p: bool,
    max_vocab: int | None = None,
    origin: str = "train split",
) -> Encoder:
    """The encoder of validated split frames (vocabularies from train, the domain's from all)."""
    stream = _from_frames(RawData(frames=frames, origins={"train": origin}), CHUNK_ROWS)
    settings = {"min_freq": min_freq, "dense_log1p": dense_log1p, "max_vocab": max_vocab}
    return _fit_stream_encoder(stream, schema, settings)


def integral_codes(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """Integral float codes cast to Int64 (``_integral_exprs``): serving applies preparation's
    rule to raw rows."""
    return frame.with_columns(_integral_exprs(schema, frame.schema))


def _features(frame: pl.DataFrame, schema: Schema, encoder: Encoder) -> tuple:
    """Codes [N, F] int32 (0 = OOV) and standardised dense [N, Dn] float32 (missing = 0)."""
    frame = frame.with_columns(pl.col(schema.domain).cast(pl.String))
    codes = np.stack(
        [_encode_column(frame, c, encoder.vocabs[c]) for c in schema.categorical], axis=1
    ).astype(np.int32)
    dense = (_dense_matrix(frame, schema.dense, encoder.dense_log1p) - encoder.mean) / encoder.std
    return codes, np.nan_to_num(dense, nan=0.0).astype(np.float32)


def encode_features(frame: pl.DataFrame, schema: Schema, encoder: Encoder) -> pl.DataFrame:
    """Feature columns of raw rows as codes (c0.., 0 = OOV) and standardised dense (x0..,
    missing = 0, the train mean): the same rules for training and serving."""
    codes, dense = _features(frame, schema, encoder)
    table = pl.DataFrame(
        {f"c{i}": codes[:, i].astype(np.int64) for i in range(codes.shape[1])},
        schema={f"c{i}": pl.Int64 for i in range(codes.shape[1])},
    )
    return table.with_columns(pl.Series(f"x{j}", dense[:, j]) for j in range(dense.shape[1]))


def _encode_chunk(frame: pl.DataFrame, schema: Schema, encoder: Encoder) -> dict[str, np.ndarray]:
    """One chunk of a split as store columns: codes, standardised dense, label, domain, ..."""
    frame = frame.with_columns(_float_codes(schema, frame.schema))
    codes, dense = _features(frame, schema, encoder)
    out = {
        "cat": codes,
        "dense": dense,
        "label": frame.get_column(schema.label).cast(pl.Int8).to_numpy(),
        "domain": codes[:, schema.categorical.index(schema.domain)] - 1,
    }
    if schema.user is not None:
        out["user"] = frame.get_column(schema.user).hash().reinterpret(signed=True).to_numpy()
    if "p_true" in frame.columns:
        out["p_true"] = frame.get_column("p_true").cast(pl.Float64).to_numpy()
    return out


def _encode_column(frame: pl.DataFrame, col: str, vocab: pl.DataFrame) -> np.ndarray:
    values = vocab.get_column(col)
    src = frame.get_column(col)
    if src.dtype != values.dtype:  # e.g. an int column read as str in one file
        src, values = src.cast(pl.String), values.cast(pl.String)
    return (
        src.replace_strict(values, vocab.get_column("code"), default=0, return_dtype=pl.Int32)
        .fill_null(0)
        .to_numpy()
    )


def _column_types(schema: Schema, n_domains: int, lazy: pl.LazyFrame) -> dict[str, tuple]:
    names = lazy.collect_schema().names()
    types = {
        "cat": (np.int32, (len(schema.categorical),)),
        "dense": (np.float32, (len(schema.dense),)),
        "label": (np.int8, ()),
        "domain": (domain_dtype(n_domains), ()),
    }
    if schema.user is not None:
        types["user"] = (np.int64, ())
    if "p_true" in names:
        types["p_true"] = (np.float64, ())
    return types


def _validate_stream(stream: RawStream, schema: Schema) -> dict[str, int]:
    """Every chunk checked against the schema; returns the rows per split."""
    rows = {}
    for split in SPLITS:
        n = 0
        for chunk in stream.chunks(split):
            schema.validate(chunk, stream.origins[split])
            n += chunk.height
        if n == 0:
            raise DataError(f"{stream.origins[split]}: no rows")
        rows[split] = n
    return rows


def encode_to_store(
    stream: RawStream, schema: Schema, path: Path, settings: dict, description: dict
) -> dict:
    """Validate, build vocabularies and dense statistics, then encode chunk by chunk into the
    store at ``path`` (atomically). Memory: one chunk plus the vocabularies."""
    rows = _validate_stream(stream, schema)
    encoder = _fit_stream_encoder(stream, schema, settings)
    vocabs = encoder.vocabs
    domain_names = vocabs[schema.domain].get_column(schema.domain).to_list()
    types = _column_types(schema, len(domain_names), stream.lazy["train"])
    writer = StoreWriter(path, rows, types)
    try:
        for split in SPLITS:
            start = 0
            for chunk in stream.chunks(split):
                values = _encode_chunk(chunk, schema, encoder)
                writer.write(split, start, values)
                start += chunk.height
        meta = {
            "vocab_sizes": [vocabs[c].height + 1 for c in schema.categorical],
            "domain_names": domain_names,
            "domain_groups": stream.domain_groups,
            "rows": rows,
            "n_dense": len(schema.dense),
            "columns": sorted(types),
            "description": description,
        }
        write_encoder(writer.tmp, schema, encoder, meta)
        writer.commit(meta)
    except BaseException:
        writer.abort()
        raise
    return meta


ENCODER_DIR = "encoder"  # in a store: vocab/<i>.parquet per categorical column i


def write_encoder(path: Path, schema: Schema, encoder: Encoder, meta: dict) -> None:
    """Store the encoder beside the codes it made (read back by ``store_encoder``): each
    categorical column's vocabulary as a parquet file, the dense mean/std in ``meta``."""
    (path / ENCODER_DIR).mkdir()
    for i, col in enumerate(schema.categorical):
        encoder.vocabs[col].write_parquet(path / ENCODER_DIR / f"{i}.parquet")
    meta["encoder"] = {
        "dense_mean": encoder.mean.tolist(),
        "dense_std": encoder.std.tolist(),
        "dense_log1p": encoder.dense_log1p,
    }


def store_encoder(path: Path | None, schema: Schema) -> Encoder | None:
    """The encoder a store was written with; None for a store written before it was kept."""
    meta = read_meta(path) if path is not None else None
    if meta is None or "encoder" not in meta:
        return None
    enc = meta["encoder"]
    return Encoder(
        vocabs={
            col: pl.read_parquet(path / ENCODER_DIR / f"{i}.parquet")
            for i, col in enumerate(schema.categorical)
        },
        mean=np.array(enc["dense_mean"], dtype=np.float64),
        std=np.array(enc["dense_std"], dtype=np.float64),
        dense_log1p=enc["dense_log1p"],
    )


def load_store(path: Path, schema: Schema, meta: dict, storage: str) -> PreparedData:
    """The prepared data from a finished store, in RAM or memory-mapped."""
    mmap = resolve_storage(storage, meta) == "mmap"
    cols = meta["columns"]
    splits = {}
    for s in SPLITS:
        get = {c: load_column(path, s, c, mmap) for c in cols}
        splits[s] = TensorSplit(
            cat=get["cat"],
            dense=get["dense"],
            label=get["label"],
            domain=get["domain"],
            user=get.get("user"),
            p_true=get.get("p_true"),
            block_rows=BLOCK_ROWS if mmap else None,
            mapped=mmap,
        )
    return PreparedData(
        schema=schema,
        splits=splits,
        vocab_sizes=meta["vocab_sizes"],
        domain_names=meta["domain_names"],
        domain_groups=meta["domain_groups"],
        cache_path=path,
        key=path.name,
    )


def _prepare_store(source, schema, path: Path, settings: dict, description: dict) -> dict:
    """Under the key's lock: reuse a store another process finished meanwhile, else build it."""
    with preparation_lock(path):
        meta = read_meta(path)
        if meta is not None:
            return meta
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f".{path.name}-spool-", dir=path.parent) as tmp:
            route = description["prepared_by"]
            stream = _source_stream(source, route, Path(tmp), settings["chunk_rows"])
            meta = encode_to_store(stream, schema, path, settings, description)
        log.info("prepared data in %.1fs (store: %s)", time.perf_counter() - t0, path)
        return meta


def prepare(
    source,
    schema: Schema,
    cache_dir: str | Path | None,
    min_freq: int = 1,
    dense_log1p: bool = True,
    max_vocab: int | None = MAX_VOCAB,
    storage: str = "auto",
    chunk_rows: int = CHUNK_ROWS,
) -> PreparedData:
    """Read the prepared store when the data config is unchanged, else stream the source into
    a new store; then load it in memory or memory-mapped (``storage``: auto|memory|mmap).
    Without a cache directory the store is written to a temporary one and loaded in memory."""
    check_storage(storage, cache_dir)
    description = {
        "source": type(source).__name__,
        "source_args": source.describe(),
        "schema": schema.__dict__,
        "min_freq": min_freq,
        "dense_log1p": dense_log1p,
        "prepared_by": preparation_route(source, storage),
    }
    settings = {
        "min_freq": min_freq,
        "dense_log1p": dense_log1p,
        "max_vocab": max_vocab,
        "storage": storage,
        "chunk_rows": chunk_rows,
    }
    key = config_hash(description)
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="adasparse-prep-") as tmp:
            path = Path(tmp) / key
            meta = _prepare_store(source, schema, path, settings, description)
            data = load_store(path, schema, meta, "memory")
            data.cache_path = None
    else:
        path = Path(cache_dir) / key
        meta = read_meta(path)
        if meta is None:
            meta = _prepare_store(source, schema, path, settings, description)
        else:
            log.debug(
                "loaded prepared data from cache %s", path
            )  # every export and rerun: not news
        data = load_store(path, schema, meta, storage)
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
    """The encoder ``prepare`` applies to ``source`` (re-fitted: ``store_encoder`` reads the
    one a store was written with), and the raw data it was fitted on (loaded in memory)."""
    raw = source.load()
    stream = _from_frames(raw, CHUNK_ROWS)
    _validate_stream(stream, schema)
    settings = {"min_freq": min_freq, "dense_log1p": dense_log1p, "max_vocab": max_vocab}
    return _fit_stream_encoder(stream, schema, settings), raw
