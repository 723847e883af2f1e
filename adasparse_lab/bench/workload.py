"""What every benchmark section runs on: synthetic rows and the benchmark's architecture.

The synthetic schema has 8 categorical fields (the domain among them) and 2 dense features; the
model is built from ``conf/model/mlp.yaml`` by run.build.build_model, as a study builds it:
embedding D=16 -> MLP [256, 128, 64] -> logit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adasparse_lab.data.prepare import PreparedData, TensorSplit, prepare
from adasparse_lab.data.sources import RandomSplit, SyntheticSource
from adasparse_lab.data.synthetic import SCHEMA
from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.run import build

CONF = Path(__file__).resolve().parents[2] / "conf"
FIXTURES = CONF.parent / "tests" / "fixtures"  # paths.data of the real data configs' samples


def data_overrides(data: str, rows: int | None = None, root: Path = FIXTURES) -> list[str]:
    """Config overrides of a benchmark's data: the built-in synthetic data (``rows`` of it,
    None: the config's size) or a conf/data config reading its files under ``root``."""
    if data == "synthetic":
        return [f"synthetic.n_rows={rows}"] if rows else []
    return [f"data={data}", f"paths.data={root}"]


def model_config(name: str) -> DictConfig:
    """conf/model/<name>.yaml with the files of its defaults list merged first, as Hydra
    composes it (``_init``: the initial weights), without composing the whole config."""
    raw = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    parts = [model_config(d) for d in raw.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*parts, raw)


MODEL = model_config("mlp")  # the benchmark's architecture (model=mlp)
EMBEDDING_DIM = int(MODEL.embedding_dim)
HIDDEN_DIMS = tuple(int(h) for h in MODEL.hidden_dims)
_HELD_OUT = 0.05  # val and test fraction each: most generated rows land in train


def synthetic_data(train_rows: int, seed: int = 0) -> PreparedData:
    """Prepare (in memory, no cache) enough synthetic rows for ``train_rows`` training rows."""
    n_rows = max(math.ceil(train_rows / (1 - 3 * _HELD_OUT)), 2_000)
    source = SyntheticSource(
        split=RandomSplit(_HELD_OUT, _HELD_OUT, seed), n_rows=n_rows, seed=seed
    )
    data = prepare(source, SCHEMA, cache_dir=None)
    if len(data.splits["train"]) < train_rows:
        raise RuntimeError(
            f"generated {len(data.splits['train'])} training rows, fewer than the {train_rows} asked"
        )
    return data


def head(split: TensorSplit, n: int) -> TensorSplit:
    """The first ``n`` rows of a split (views, no copy)."""
    return TensorSplit(
        cat=split.cat[:n],
        dense=split.dense[:n],
        label=split.label[:n],
        domain=split.domain[:n],
        user=None if split.user is None else split.user[:n],
        p_true=None if split.p_true is None else split.p_true[:n],
        block_rows=split.block_rows,
        mapped=split.mapped,
    )


def with_train_rows(data: PreparedData, train_rows: int, val_rows: int = 8_192) -> PreparedData:
    """``data`` whose train split is its first ``train_rows`` rows and whose val split is small
    (``fit`` evaluates val after every epoch; that time is outside its samples/s)."""
    splits = dict(data.splits)
    splits["train"] = head(data.splits["train"], train_rows)
    splits["val"] = head(data.splits["val"], val_rows)
    return replace(data, splits=splits)


def build_model(data: PreparedData, pruner: PrunerSpec | None) -> AdaSparseModel:
    """The benchmark's architecture (conf/model/mlp.yaml) for ``data``; weights drawn from
    torch's current RNG."""
    return build.build_model(MODEL, data, pruner)
