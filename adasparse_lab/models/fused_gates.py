"""The fast kernel of a learned mask: gate and mask product in one autograd node.

Shapes: B rows, H neurons; v [B, H] the pruner pre-activation, h [B, H] the layer output it
masks, alpha the annealed sharpness (a 0-dim tensor), sigma the sigmoid, sigma' its derivative.

``fused_mask(gate, v, h, alpha) -> (y = h * pi, keep, pi)`` gives the values and gradients of
the reference path (``gates.py`` then ``h * pi``) within float tolerance, with a fraction of
its elementwise passes over [B, H]: the reference builds each straight-through estimator from
four tensors (surrogate, hard, their difference, the sum) and autograd walks all of them back;
here the forward keeps d = alpha sigma'(alpha v) and the backward is the closed form

    dL/dv = d * (beta * dL/dpi + dL/dkeep),   dL/dpi = dL/dy * h,   dL/dh = dL/dy * pi

(binarization: pi = keep, beta = 1; scaling: no alpha, keep = 1 without gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate

_sigmoid_backward = torch.ops.aten.sigmoid_backward  # (g, s) -> g * s * (1 - s), one pass


def _sigmoid_and_slope(v: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s = sigma(alpha v), d = alpha sigma'(alpha v)), both [B, H]."""
    s = (v * alpha).sigmoid_()
    return s, _sigmoid_backward(alpha.expand_as(s), s)


def _v_grad(g_y, h, g_other, d: torch.Tensor, beta: float) -> torch.Tensor | None:
    """d * (beta * g_y * h + g_other): the STE gradient of v (None when nothing reached it)."""
    if g_y is None:
        return None if g_other is None else g_other * d
    base = g_other if g_other is not None else g_y.new_zeros(())
    return torch.addcmul(base, g_y, h, value=beta).mul_(d)


def _save(ctx, d: torch.Tensor, h: torch.Tensor, pi: torch.Tensor) -> None:
    """Keep what the closed-form backward reads: the slope d, the masked h and the weights pi;
    gradients that reach no output stay None (not zero tensors)."""
    ctx.save_for_backward(d, h, pi)
    ctx.set_materialize_grads(False)


def _grads(ctx, g_y, g_other, beta: float) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dL/dv, dL/dh = dL/dy * pi) from what ``_save`` kept; ``g_other`` the gradient that
    reached keep (or pi) directly."""
    d, h, pi = ctx.saved_tensors
    g_h = g_y * pi if g_y is not None and ctx.needs_input_grad[1] else None
    return _v_grad(g_y, h, g_other, d, beta), g_h


class _FusionMask(torch.autograd.Function):
    """pi = beta sigma(alpha v) [beta sigma(alpha v) > eps]; keep = [pi > 0]."""

    @staticmethod
    def forward(ctx, v, h, alpha, beta: float, eps: float):
        s, d = _sigmoid_and_slope(v, alpha)
        pi = F.threshold_(s.mul_(beta), eps, 0.0)  # beta*s where beta*s > eps, else 0
        keep = torch.sign(pi)  # eps > 0, so pi > 0 exactly where kept
        _save(ctx, d, h, pi)
        ctx.beta = beta
        return h * pi, keep, pi

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_keep, g_pi):
        if g_pi is not None:  # the weights themselves reached the loss (not in training)
            g_keep = g_pi * ctx.beta if g_keep is None else torch.add(g_keep, g_pi, alpha=ctx.beta)
        return *_grads(ctx, g_y, g_keep, ctx.beta), None, None, None


class _BinarizationMask(torch.autograd.Function):
    """pi = keep = [sigma(alpha v) > eps]."""

    @staticmethod
    def forward(ctx, v, h, alpha, eps: float):
        s, d = _sigmoid_and_slope(v, alpha)
        keep = F.threshold_(s, eps, 0.0).sign_()  # 1 where sigma > eps, else 0
        _save(ctx, d, h, keep)
        return h * keep, keep

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_keep):
        return *_grads(ctx, g_y, g_keep, 1.0), None, None


class _ScalingMask(torch.autograd.Function):
    """pi = beta sigma(v) (no alpha, no zeros)."""

    @staticmethod
    def forward(ctx, v, h, beta: float):
        s = torch.sigmoid(v)
        d = _sigmoid_backward(torch.full((), beta, dtype=s.dtype, device=s.device).expand_as(s), s)
        pi = s.mul_(beta)
        _save(ctx, d, h, pi)
        return h * pi, pi

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_pi):
        return *_grads(ctx, g_y, g_pi, 1.0), None


def fused_mask(
    gate: BinarizationGate | ScalingGate | FusionGate,
    v: torch.Tensor,
    h: torch.Tensor,
    alpha: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h * pi [B, H], keep [B, H], pi [B, H]) of ``gate`` on pre-activation ``v``."""
    if isinstance(gate, FusionGate):
        return _FusionMask.apply(v, h, alpha, gate.beta, gate.eps)
    if isinstance(gate, BinarizationGate):
        y, keep = _BinarizationMask.apply(v, h, alpha, gate.eps)
        return y, keep, keep
    if isinstance(gate, ScalingGate):
        y, pi = _ScalingMask.apply(v, h, gate.beta)
        return y, torch.ones_like(v), pi
    raise TypeError(f"no fused kernel for gate {type(gate).__name__}")
