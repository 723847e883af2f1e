"""Models: embeddings, AdaSparse gates and pruners, pruning rivals, FLOPs and compaction."""

from adasparse_lab.models.adasparse import AdaSparseModel, ModelOutput, PrunerSpec
from adasparse_lab.models.static_pruning import StaticPruning

__all__ = ["AdaSparseModel", "ModelOutput", "PrunerSpec", "StaticPruning"]
