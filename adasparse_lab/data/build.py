"""A prepared dataset from its config (conf/data/*.yaml)::

data: {source: {_target_...}, schema: {...}, min_freq, dense_log1p, max_vocab?, storage?}
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import instantiate
from adasparse_lab.data.prepare import MAX_VOCAB, prepare
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.data.schema import Schema
from adasparse_lab.errors import ConfigError


def build_data(data_cfg: DictConfig, cache_dir: str | None) -> PreparedData:
    """The source read, validated, encoded and cached (data/prepare.py); the cache is reused."""
    source = instantiate(data_cfg.source, "data.source")
    try:
        schema = Schema.from_config(**OmegaConf.to_container(data_cfg.schema, resolve=True))  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"data.schema: {err}") from None
    return prepare(
        source,
        schema,
        cache_dir,
        data_cfg.min_freq,
        data_cfg.dense_log1p,
        max_vocab=data_cfg.get("max_vocab", MAX_VOCAB),
        storage=data_cfg.get("storage", "auto"),
    )
