"""Data layer: schema, sources, preparation and in-memory batching."""

from adasparse_lab.data.prepare import PreparedData, TensorSplit, prepare
from adasparse_lab.data.schema import Schema

__all__ = ["PreparedData", "Schema", "TensorSplit", "prepare"]
