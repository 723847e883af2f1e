"""Honest FLOPs of the tower (ADASPARSE.md, "Counting compute honestly").

FLOPs = 2 x multiply-adds per sample; a Linear with a kept inputs and b computed outputs costs
2ab for the product and b for the bias. Counted: the MLP layers, the head and the pruners.
Not counted (identical in every variant): embedding lookups and the dense-feature projection.

- Paper form (pruner input [h^l ; e_d], ``sample_dependent``): a layer's outputs must all be
  computed before its mask is known, so a mask saves work only in the *next* layer; each
  pruner costs 2 (H_l + d_e) H_l + H_l. This can exceed the dense model, and it is reported.
- Low-rank pruner ([h ; e_d] -> r -> H_l): 2 r (H_l + d_e) + 2 r H_l + H_l per layer.
- Domain form and pruning rivals (static masks): masks are fixed per domain, pruned rows and
  columns vanish, the pruner costs nothing at serving time (its output is a constant folded
  into the weights).
- A gate without zeros (scaling) saves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TowerShape:
    widths: list[int]  # [H_0 (input), H_1, ..., H_L]; the head maps H_L -> 1
    masked: list[int]  # masked positions (0 = input embedding)
    pruner_in_domain_dim: int  # d_e
    sample_dependent: bool  # paper form: pruners run online
    zeros: bool  # the gate can produce zeros
    pruner_rank: int | None = None  # low-rank pruners; None = one full Linear


@dataclass
class Flops:
    """Per-sample FLOPs split by kind; each field is a tensor [B] (or a 0-d tensor)."""

    matmul: torch.Tensor
    bias: torch.Tensor
    pruner: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.matmul + self.bias + self.pruner


def dense_flops(widths: list[int]) -> float:
    """The same tower with no pruner and nothing pruned."""
    dims = [*widths, 1]
    return float(sum(2 * a * b + b for a, b in zip(dims[:-1], dims[1:])))


def pruner_flops(width: int, d_e: int, rank: int | None) -> float:
    """One online pruner reading [h ; e_d] (width + d_e inputs) and writing ``width`` weights."""
    if rank is None:
        return float(2 * (width + d_e) * width + width)
    return float(2 * rank * (width + d_e) + 2 * rank * width + width)


def tower_flops(shape: TowerShape, kept: torch.Tensor) -> Flops:
    """FLOPs per sample. ``kept`` [B, P]: number of kept neurons at each masked position."""
    B = kept.shape[0]
    dims = [*shape.widths, 1]
    counts = [torch.full((B,), float(w), dtype=torch.float64) for w in dims]
    if shape.zeros:
        for j, pos in enumerate(shape.masked):
            counts[pos] = kept[:, j].to(torch.float64)
    matmul = torch.zeros(B, dtype=torch.float64)
    bias = torch.zeros(B, dtype=torch.float64)
    pruner = torch.zeros(B, dtype=torch.float64)
    for i in range(1, len(dims)):
        inputs = counts[i - 1]
        # Online masks: all outputs of a layer are computed; static masks: only kept ones.
        outputs = torch.full_like(inputs, float(dims[i])) if shape.sample_dependent else counts[i]
        matmul += 2 * inputs * outputs
        bias += outputs
    if shape.sample_dependent:
        d_e = shape.pruner_in_domain_dim
        for pos in shape.masked:
            pruner += pruner_flops(shape.widths[pos], d_e, shape.pruner_rank)
    return Flops(matmul=matmul, bias=bias, pruner=pruner)
