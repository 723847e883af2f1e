"""The three weighting forms of AdaSparse: how a pruner's pre-activation v becomes pi.

Notation: v [B, H] pruner pre-activation, alpha the annealed sharpness, sigma the sigmoid,
step(z) = 1 for z > 0 else 0 (NOT torch.sign, which gives -1 and never prunes).

Every gate returns pi (what multiplies the layer output) and keep (the 0/1 indicator of a
non-zero pi). Both use the straight-through estimator: the forward pass is the hard value,
the backward pass is the gradient of the sigmoid surrogate, so the pruner trains and the
sparsity regulariser can move ``keep`` even though step() has zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adasparse_lab.errors import ConfigError


@dataclass
class GateOutput:
    pi: torch.Tensor  # [B, H] weights applied to the layer output
    keep: torch.Tensor  # [B, H] hard 0/1 in forward, sigmoid gradient in backward


def _straight_through(hard: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward: ``hard``. Backward: d(surrogate). Without autograd (evaluation, serving) the
    hard value itself: exact, and two elementwise passes fewer over [B, H]."""
    if not torch.is_grad_enabled():
        return hard
    return surrogate + (hard - surrogate).detach()


def _check_eps(eps: float, beta: float | None = None) -> None:
    """eps is compared with sigma in (0, 1) (binarization) or with beta*sigma in (0, beta)
    (fusion): outside that range every neuron is kept or every neuron pruned."""
    if beta is None and not 0.0 < eps < 1.0:
        raise ConfigError(f"pruner.gate.eps={eps} must be in (0, 1)")
    if beta is not None and not 0.0 < eps < beta:
        raise ConfigError(
            f"pruner.gate.eps={eps} must be in (0, beta={beta}): fusion compares it with "
            f"beta*sigma, which lies in (0, pruner.gate.beta={beta})"
        )


def _check_beta(beta: float) -> None:
    if beta < 1.0:
        raise ConfigError(f"pruner.gate.beta={beta} must be >= 1 (the paper uses 2)")


class BinarizationGate:
    """pi = step(sigma(alpha*v) - eps) in {0, 1}."""

    has_zeros = True

    def __init__(self, eps: float = 0.25) -> None:
        _check_eps(eps)
        self.eps = eps

    def __call__(self, v: torch.Tensor, alpha: torch.Tensor) -> GateOutput:
        s = torch.sigmoid(alpha * v)
        keep = _straight_through((s > self.eps).to(v.dtype), s)
        return GateOutput(pi=keep, keep=keep)


class ScalingGate:
    """pi = beta * sigma(v): rescales neurons, never zeroes them (so it saves no FLOPs)."""

    has_zeros = False

    def __init__(self, beta: float = 2.0) -> None:
        _check_beta(beta)
        self.beta = beta

    def __call__(self, v: torch.Tensor, alpha: torch.Tensor) -> GateOutput:
        return GateOutput(pi=self.beta * torch.sigmoid(v), keep=torch.ones_like(v))


class FusionGate:
    """pi = beta*sigma(alpha*v) * step(beta*sigma(alpha*v) - eps): scaling and zeroing."""

    has_zeros = True

    def __init__(self, beta: float = 2.0, eps: float = 0.25) -> None:
        _check_beta(beta)
        _check_eps(eps, beta)
        self.beta, self.eps = beta, eps

    def __call__(self, v: torch.Tensor, alpha: torch.Tensor) -> GateOutput:
        s = torch.sigmoid(alpha * v)
        scaled = self.beta * s
        hard = (scaled > self.eps).to(v.dtype)
        return GateOutput(
            pi=_straight_through(scaled * hard, scaled), keep=_straight_through(hard, s)
        )
