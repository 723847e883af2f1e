"""Pruning rivals with a static structure: whole neurons are switched off by fixed 0/1 masks,
one mask per domain code, so every domain's sub-network can be compacted for serving.

- ``magnitude``: gradual structured magnitude pruning (Zhu & Gupta 2017) of the shared tower,
  one structure for every domain. Importance of neuron j at a masked position is
  ``mean |a_j| * ||W_next[:, j]||`` (activation) or ``||W_in[j, :]|| * ||W_next[:, j]||``
  (weight), measured on the training batches since the last update.
- ``domain_magnitude``: the same importance measured on each domain's own samples, so each
  domain keeps its own top neurons (trained jointly with per-domain masks).
- ``random``: fixed random per-domain scores drawn once at initialisation (seeded by the model
  seed), the control that shows whether learned structure matters.

The target sparsity comes from the ``schedule`` group (the band centre at the current training
progress); masks are recomputed every ``update_every`` steps while the target moves and stay
fixed once it is final, so the rest of training fine-tunes the pruned network. Pruning is
monotone: a pruned neuron ranks below every kept one, so masks are nested as the target grows.
Activation importance waits for activations: an update due before any training batch was
observed since the last one is put off to the next step (with a constant band the target is
above zero at step 0, where every score was 0 and neurons were pruned in index order).

Shapes: B batch, V codes of the domain field (OOV code 0 included), H width at a position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.blocks import check_choice

METHODS = ("magnitude", "domain_magnitude", "random")
IMPORTANCE = ("activation", "weight")


@dataclass
class StaticPruning:
    """A pruning rival (``pruner=magnitude|domain_magnitude|random``)."""

    method: str
    importance: str = "activation"
    update_every: int = 20
    mask_input: bool = False

    def __post_init__(self) -> None:
        check_choice("pruner.method", self.method, METHODS)
        check_choice("pruner.importance", self.importance, IMPORTANCE)
        if self.update_every < 1:
            raise ConfigError(f"pruner.update_every={self.update_every} must be >= 1")


class StaticMasks(nn.Module):
    """Masks [V, H] per position and the statistics that choose them (all buffers, so a saved
    state dict reproduces the served structure)."""

    def __init__(self, spec: StaticPruning, widths: dict[int, int], n_codes: int) -> None:
        super().__init__()
        self.spec = spec
        self.positions = sorted(widths)
        for pos, width in widths.items():
            self.register_buffer(f"mask_{pos}", torch.ones(n_codes, width))
            self.register_buffer(f"act_{pos}", torch.zeros(n_codes, width, dtype=torch.float64))
            if spec.method == "random":  # drawn from the global RNG: seeded with the model
                self.register_buffer(f"score_{pos}", torch.rand(n_codes, width))
        self.register_buffer("rows", torch.zeros(n_codes, dtype=torch.float64))
        self.register_buffer("target", torch.tensor(0.0))
        self.register_buffer("steps", torch.tensor(0))

    def mask(self, pos: int) -> torch.Tensor:
        return getattr(self, f"mask_{pos}")

    def keep(self, pos: int, code: torch.Tensor) -> torch.Tensor:
        """[B, H] 0/1 mask rows of the samples' domain codes."""
        return self.mask(pos).index_select(0, code)

    @torch.no_grad()
    def observe(self, pos: int, h: torch.Tensor, code: torch.Tensor) -> None:
        """Accumulate |activation| per code and neuron (training batches only)."""
        if self.spec.method == "random" or self.spec.importance != "activation":
            return
        getattr(self, f"act_{pos}").index_add_(0, code, h.detach().abs().double())
        if pos == self.positions[0]:
            self.rows.index_add_(0, code, torch.ones_like(code, dtype=torch.float64))

    @torch.no_grad()
    def step(
        self,
        target: float,
        weights: dict[int, tuple[torch.Tensor, torch.Tensor]],
        final: bool = False,
    ) -> bool:
        """Called before every training step with the target sparsity; recomputes the masks
        every ``update_every`` steps while the target differs from the applied one, and at once
        when the target is ``final`` (the epochs selection may keep are at the target).
        ``weights`` maps a position to (W_in [H, *] or an empty tensor, W_next [*, H]). True if
        updated. Put off (the step not counted) while activation statistics are empty."""
        due = final or int(self.steps) % self.spec.update_every == 0
        if not due or abs(float(self.target) - target) < 1e-9:
            self.steps += 1
            return False
        if self._waiting_for_activations():
            return False  # not counted: due again at the next step
        self.steps += 1
        for pos in self.positions:
            scores = self._scores(pos, *weights[pos])
            self.mask(pos).copy_(_top_mask(scores, self.mask(pos), target))
            getattr(self, f"act_{pos}").zero_()
        self.rows.zero_()
        self.target.fill_(target)
        return True

    def _waiting_for_activations(self) -> bool:
        """Activation importance with no training sample observed since the last update."""
        uses_activations = self.spec.method != "random" and self.spec.importance == "activation"
        return uses_activations and float(self.rows.sum()) == 0.0

    def _scores(self, pos: int, w_in: torch.Tensor, w_next: torch.Tensor) -> torch.Tensor:
        """[V, H] importance (higher = keep) of each neuron for each code."""
        if self.spec.method == "random":
            return getattr(self, f"score_{pos}").double()
        out_norm = w_next.detach().double().norm(dim=0)  # [H]
        if self.spec.importance == "weight":
            base = w_in.detach().double().norm(dim=1) if w_in.numel() else torch.ones_like(out_norm)
            return (base * out_norm).expand(self.mask(pos).shape[0], -1)
        act = getattr(self, f"act_{pos}")
        pooled = act.sum(0) / self.rows.sum().clamp(min=1.0)  # [H] over every domain
        if self.spec.method == "magnitude":
            return (pooled * out_norm).expand(act.shape[0], -1)
        per_code = act / self.rows.clamp(min=1.0).unsqueeze(1)
        seen = (self.rows > 0).unsqueeze(1)  # unseen codes (OOV) fall back to the pooled score
        return torch.where(seen, per_code, pooled.expand_as(act)) * out_norm


def _top_mask(scores: torch.Tensor, current: torch.Tensor, target: float) -> torch.Tensor:
    """Keep the top (1 - target) share of each row; already pruned neurons rank lowest."""
    V, H = scores.shape
    n_prune = min(round(target * H), H - 1)  # a layer keeps at least one neuron
    ranked = torch.where(current > 0, scores, scores.new_full((), -float("inf")))
    order = torch.argsort(ranked, dim=1, stable=True)  # ascending: the first n_prune go
    mask = torch.ones(V, H, dtype=current.dtype, device=current.device)
    mask.scatter_(1, order[:, :n_prune], 0.0)
    return mask
