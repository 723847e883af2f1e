"""The pruner a model is built with (``pruner=`` groups other than the rivals and none): which
gate turns a pruner's pre-activation into mask weights, what the pruner reads, and alpha's
annealing schedule. A plain description; models/adasparse.py builds the pruners it describes.
"""

from __future__ import annotations

from dataclasses import dataclass

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.blocks import check_choice
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate

PRUNER_INPUTS = ("hidden+domain", "domain")


@dataclass
class PrunerSpec:
    """A pruner variant. ``inputs``: 'hidden+domain' is the paper's [h^l ; e_d] (masks depend on
    the sample); 'domain' feeds e_d only, so each domain has one fixed sub-network that can be
    compacted. alpha rises linearly from alpha_start to alpha_end over the first
    ``alpha_anneal`` fraction of training, then stays. ``rank``: None for the paper's full
    pruner (one Linear [H_l + d_e] -> H_l); r for a low-rank one ([H_l + d_e] -> r -> H_l, no
    nonlinearity: a factorised Linear), which costs 2r(H_l + d_e + H_l) + H_l FLOPs instead
    of 2(H_l + d_e)H_l + H_l."""

    gate: BinarizationGate | ScalingGate | FusionGate
    inputs: str = "hidden+domain"
    mask_input: bool = False
    stop_gradient: bool = False
    alpha_start: float = 0.1
    alpha_end: float = 5.0
    alpha_anneal: float = 0.8
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"pruner.rank={self.rank} must be a positive integer or null")
        check_choice("pruner.inputs", self.inputs, PRUNER_INPUTS)
        if not 0 < self.alpha_start <= self.alpha_end:
            raise ConfigError(
                f"pruner.alpha_start={self.alpha_start} and alpha_end={self.alpha_end} "
                "must satisfy 0 < alpha_start <= alpha_end"
            )
        if not 0 < self.alpha_anneal <= 1:
            raise ConfigError(f"pruner.alpha_anneal={self.alpha_anneal} must be in (0, 1]")

    def alpha_at(self, progress: float) -> float:
        """alpha as a pure function of training progress in [0, 1]."""
        t = min(max(progress / self.alpha_anneal, 0.0), 1.0)
        return self.alpha_start + t * (self.alpha_end - self.alpha_start)
