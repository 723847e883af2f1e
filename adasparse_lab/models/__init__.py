"""Models: embeddings, AdaSparse gates and pruners, pruning rivals, FLOPs and compaction."""

from adasparse_lab.models.adasparse import AdaSparseModel
from adasparse_lab.models.base import ModelOutput
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.pruner_spec import PrunerSpec
from adasparse_lab.models.static_pruning import StaticPruning

__all__ = ["AdaSparseModel", "Fields", "ModelOutput", "PrunerSpec", "StaticPruning"]
