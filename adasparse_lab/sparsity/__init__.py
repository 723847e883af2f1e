"""Sparsity targets: band schedules and the flexible sparsity regulariser."""

from adasparse_lab.sparsity.regularizer import SparsityRegularizer, zero_fraction
from adasparse_lab.sparsity.schedules import (
    AGPBand,
    BandSchedule,
    ConstantBand,
    CosineBand,
    LinearBand,
    StepBand,
)

__all__ = [
    "AGPBand",
    "BandSchedule",
    "ConstantBand",
    "CosineBand",
    "LinearBand",
    "SparsityRegularizer",
    "StepBand",
    "zero_fraction",
]
