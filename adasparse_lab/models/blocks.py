"""Building blocks of the zoo models: plain MLPs with their FLOPs, per-domain routing of rows,
and the served form of one domain.

Shapes: B batch, V codes of the domain field, H_0 embedding output width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from adasparse_lab.errors import ConfigError


def check_dims(key: str, dims: Sequence[int], allow_empty: bool = False) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if (not dims and not allow_empty) or (dims and min(dims) < 1):
        raise ConfigError(
            f"{key}={list(dims)} must be {'' if allow_empty else 'non-empty and '}positive"
        )
    return dims


def check_choice(key: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; else a ConfigError naming ``key`` and them."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r}; choose one of {list(choices)}")
    return value


def check_count(key: str, value: int) -> int:
    if int(value) < 1:
        raise ConfigError(f"{key}={value} must be >= 1")
    return int(value)


class MLP(nn.Sequential):
    """x [B, dims[0]] -> [B, dims[-1]]: Linear + ReLU per layer (``last_relu``: also after the
    last); ``dropout`` after each ReLU."""

    def __init__(self, dims: Sequence[int], last_relu: bool = True, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if last_relu or i < len(dims) - 2:
                layers.append(nn.ReLU())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.dims = list(dims)


def mlp_flops(dims: Sequence[int]) -> tuple[float, float]:
    """(matmul, bias) FLOPs per sample of an MLP with layer widths ``dims``."""
    pairs = list(zip(dims[:-1], dims[1:]))
    return float(sum(2 * a * b for a, b in pairs)), float(sum(b for _, b in pairs))


class Tower(nn.Module):
    """x [B, H] -> logits [B]: an MLP ending in one output."""

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP([in_dim, *dims, 1], last_relu=False, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def per_domain(
    x: torch.Tensor,
    code: torch.Tensor,
    n_codes: int,
    fn: Callable[[int, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """fn(c, x[rows of code c]) for each code present, put back in row order: each row goes
    through its own domain's modules only (the FLOPs a served domain pays). x [B, ...]."""
    order = torch.argsort(code)
    counts = torch.bincount(code, minlength=n_codes).tolist()
    chunks = x.index_select(0, order).split(counts)
    outs = [fn(c, chunk) for c, chunk in enumerate(chunks) if len(chunk)]
    out = torch.cat(outs)
    return torch.empty_like(out).index_copy(0, order, out)


class Route(nn.Module):
    """The served form of one domain: embedding -> ``net`` (a module that reads h^0 [B, H_0]
    and holds only what that domain uses) -> logits [B]."""

    def __init__(self, embedding: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.embedding, self.net = embedding, net

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.net(self.embedding(cat, dense)[1])
