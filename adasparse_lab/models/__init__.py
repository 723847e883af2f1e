"""Models: embeddings, AdaSparse gates and pruners, FLOPs counting and compaction."""

from adasparse_lab.models.adasparse import AdaSparseModel, ModelOutput, PrunerSpec

__all__ = ["AdaSparseModel", "ModelOutput", "PrunerSpec"]
