"""The flexible sparsity regulariser (AdaSparse, section "flexible sparsity constraints").

R_s = (1/L) sum_l lambda^l |r^l - r|, with r the band centre and
lambda^l = 0 inside [r_min, r_max] and lambda_hat |r^l - r| outside: a dead-zone quadratic.

r^l, the fraction of zeros of pi^l over the batch, is made differentiable with the gates'
straight-through ``keep`` (hard 0/1 forward, sigmoid-surrogate gradient backward): the
regulariser sees the true sparsity and still pushes the pruner pre-activations.
lambda_hat grows geometrically from ``lambda_start`` to ``lambda_end`` over the first
``growth`` fraction of training.
"""

from __future__ import annotations

import math

import torch

from adasparse_lab.errors import ConfigError


def zero_fraction(keep: torch.Tensor) -> torch.Tensor:
    """r^l of one masked layer: the fraction of zero entries of its keep indicators [B, H_l],
    i.e. each sample counts once (sample-weighted) and each neuron once. Differentiable
    through the straight-through ``keep``. This is the quantity the target band constrains.
    sum / numel rather than mean: the gradient of a sum is a broadcast view of one number, of
    a mean a materialised [B, H] division, once per layer and step.
    Counted in at least float32 (a bf16 sum of B*H ones under autocast is coarse)."""
    total = keep.sum(dtype=torch.promote_types(keep.dtype, torch.float32))
    return 1.0 - total / keep.numel()


class SparsityRegularizer:
    def __init__(
        self, lambda_start: float = 0.01, lambda_end: float = 1.0, growth: float = 0.5
    ) -> None:
        if not 0 < lambda_start <= lambda_end:
            raise ConfigError(
                f"regularizer.lambda_start={lambda_start} and lambda_end={lambda_end} "
                "must satisfy 0 < lambda_start <= lambda_end"
            )
        if not 0 < growth <= 1:
            raise ConfigError(f"regularizer.growth={growth} must be in (0, 1]")
        self.lambda_start, self.lambda_end, self.growth = lambda_start, lambda_end, growth

    def lambda_at(self, progress: float) -> float:
        t = min(max(progress / self.growth, 0.0), 1.0)
        return math.exp(
            math.log(self.lambda_start) + t * math.log(self.lambda_end / self.lambda_start)
        )

    @staticmethod
    def penalty(
        keep: list[torch.Tensor], band: tuple[float, float], lambda_hat: float
    ) -> torch.Tensor:
        """R_s for one batch; ``keep`` holds [B, H_l] per masked layer. 0 with no layers."""
        if not keep:
            return torch.zeros(())
        lo, hi = band
        centre = (lo + hi) / 2
        total = keep[0].new_zeros(())
        for k in keep:
            r = zero_fraction(k)
            outside = (r < lo) | (r > hi)
            total = total + torch.where(
                outside, lambda_hat * (r - centre) ** 2, torch.zeros_like(r)
            )
        return total / len(keep)
