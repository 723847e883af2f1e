"""Data layer: schema, sources, preparation and in-memory batching."""

from adasparse_lab.data.prepare import prepare
from adasparse_lab.data.prepared import PreparedData, TensorSplit
from adasparse_lab.data.schema import Schema

__all__ = ["PreparedData", "Schema", "TensorSplit", "prepare"]
