"""The interface every ``model=`` choice implements (the multi-domain model zoo).

Training (trainer.fit), evaluation, FLOPs, latency, the study and the benchmark use ONLY what
is written here, so a new model is one file plus one conf/model/<name>.yaml.

Shapes: B batch, F categorical fields, Dn dense features, P masked positions, H_p the width at
masked position p, V codes of the domain field (OOV code 0 included; domain index k has code
k + 1, data.prepare).

Construction (Hydra, conf/model/<name>.yaml with ``_target_``)::

    Model(fields: Fields, embedding_dim: int = 16,  # fields: from the data, not in the YAML
          <the model's own hyperparameters>, pruner: PrunerSpec | StaticPruning | None = None)

``Fields`` (models/embedding.py) is the data's field schema: vocab_sizes, n_dense and the
domain-aware field positions; run.build.build_model reads it from the prepared data and passes
it, with the pruner, after instantiating the YAML. ``_embed(fields, embedding_dim)`` builds the
shared ``embedding``, every model's first module.

A model that cannot take a pruner raises ``ConfigError`` naming ``pruner`` when given one
(``reject_pruner``: "model=star takes no pruner; use pruner=none").

forward(cat [B, F] long, dense [B, Dn] float) -> ModelOutput(logits [B], keep, pi)
    keep, pi: one [B, H_p] tensor per masked position (empty lists without masks).

Attributes and methods (defaults below serve every model without pruners):

- ``embedding``: FieldEmbedding (shared by all domains; lookups are not counted as FLOPs).
- ``spec``: the PrunerSpec | StaticPruning | None the model was built with.
- ``positions``: list[int], the masked positions ([] without pruners); ``widths``: widths[p]
  is the width H_p at masked position p (a list or a dict).
- ``learns_masks`` (property): masks come from pruners trained through the regulariser.
- ``masks_zero`` (property): the masks can zero neurons (a target-sparsity band applies).
- ``before_step(progress, band, final=False)``: the trainer's hook before each step.
- ``domain_code(cat) -> [B]``: the code of the domain field.
- ``flops(kept [B, P] float, code [B] long) -> Flops``: honest per-sample FLOPs (float64 [B]
  fields) of the network AS SERVED for each row's domain. FLOPs = 2 x multiply-adds + bias
  adds (+ elementwise products where a model has them, under ``bias``); embedding lookups are
  not counted; a pruner or generator that runs online counts under ``pruner``. ``kept[:, j]``
  is the number of kept neurons at masked position ``positions[j]``.
- ``served(code: int) -> nn.Module``: the network that serves domain ``code``, with
  forward(cat, dense) -> logits [B]; its FLOPs as counted by
  torch.utils.flop_counter.FlopCounterMode (mm, addmm, bmm: 2 x multiply-adds) equal
  ``flops(...).matmul`` for that domain, plus the matmuls of what runs online under
  ``pruner`` (a generator). It runs the route of that one domain only: MMoE runs that domain's
  gate and tower; STAR folds its weights; an MLP with a static structure is compacted.
  ``Logits(model)`` (the whole model) where nothing smaller exists, e.g. masks that vary per
  sample (their FLOPs are checked by tests/test_flops_truth.py instead); latency.py times
  served(code) per domain and reports it as 'compact' unless it is ``Logits``.
- ``private_parameters(code: int) -> list[(Parameter, index | None)]``: parameters, or the
  slices ``param[index]`` of them, that only domain ``code`` uses: perturbing them leaves every
  other domain's predictions unchanged (the routing tests). The default: the
  domain field's embedding row of ``code``; models add their per-domain weights.
- ``domain_params(code) -> int``: parameters the served network of ``code`` uses, the
  embedding table excluded (the ``params`` column of the domains table).

The FLOPs ratio (``<split>/flops/ratio``, ``flops_ratio`` in the domains table) has ONE
denominator for every model in a study: ``reference_flops`` below, the dense MLP tower
[H_0, *flops_reference, 1] with the model's embedding output width H_0 and the config's
``flops_reference`` hidden dims (default [256, 128, 64], the mlp default), which
run.build.build_model stores in ``model.flops_reference`` (``reference_dims()``: a model built
outside a config falls back to the default; the MLP tower to its own hidden dims).

Each conf/model/<name>.yaml carries ``name: <name>`` (stripped before instantiation): the
model's name in method names ('dcnv2+adasparse-fusion', 'mmoe') and report colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.embedding import FieldEmbedding, Fields
from adasparse_lab.models.flops import Flops, dense_flops
from adasparse_lab.models.pruner_spec import PrunerSpec

DEFAULT_FLOPS_REFERENCE = (256, 128, 64)

PrivateParams = list[tuple[nn.Parameter, object]]


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B]
    keep: list[torch.Tensor]  # per masked position: [B, H_l], 0/1 forward, STE backward
    pi: list[torch.Tensor]  # per masked position: [B, H_l], the applied weights


def reference_flops(input_dim: int, hidden: Sequence[int] = DEFAULT_FLOPS_REFERENCE) -> float:
    """Per-sample FLOPs of the dense reference MLP [input_dim, *hidden, 1]: the ratio's
    denominator for every model."""
    return dense_flops([input_dim, *hidden])


def reject_pruner(name: str, pruner) -> None:
    """Models without masked positions take no pruner (``pruner=none``)."""
    if pruner is not None:
        raise ConfigError(f"model={name} takes no pruner; use pruner=none")


def constant_flops(code: torch.Tensor, matmul, bias, pruner=0.0) -> Flops:
    """Flops whose parts are per-domain constants: each a float or a [V] tensor indexed by code."""

    def per_row(x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(torch.float64)[code.cpu()]
        return torch.full((len(code),), float(x), dtype=torch.float64)

    return Flops(matmul=per_row(matmul), bias=per_row(bias), pruner=per_row(pruner))


class Logits(nn.Module):
    """forward(cat, dense) -> logits [B] of a model (its served form when no other exists)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.model(cat, dense).logits


class MultiDomainModel(nn.Module):
    """Base of every zoo model; the defaults are those of a model without masks."""

    spec = None
    flops_reference: tuple[int, ...] | None = None  # set by run.build.build_model
    positions: list[int] = []
    widths: Sequence[int] | dict[int, int] = []

    def _embed(self, fields: Fields, embedding_dim: int) -> int:
        """Build ``embedding``, the table every domain shares, and return its output width H_0.
        Every model builds it first, before any other module: the order in which modules are
        built decides the seeded initial weights."""
        self.fields = fields
        self.embedding = FieldEmbedding(fields, embedding_dim)
        return self.embedding.output_dim()

    @property
    def n_codes(self) -> int:
        """V: codes of the domain field (OOV code 0 included)."""
        return self.fields.n_codes

    def code_embeddings(self) -> torch.Tensor:
        """[V, D]: the domain field's embedding of each of its codes."""
        start = self.fields.domain_rows_start
        return self.embedding.table.weight[start : start + self.n_codes]

    @property
    def learns_masks(self) -> bool:
        return isinstance(self.spec, PrunerSpec)

    @property
    def masks_zero(self) -> bool:
        return False

    def before_step(self, progress: float, band: tuple[float, float], final: bool = False) -> None:
        """No masks: nothing to anneal."""

    def domain_code(self, cat: torch.Tensor) -> torch.Tensor:
        """[B] code of the domain field (the first domain-aware field)."""
        return cat[:, self.embedding.order[0]]

    def reference_dims(self) -> tuple[int, ...]:
        """Hidden dims of the FLOPs ratio's reference MLP: ``flops_reference`` when set (every
        model built from a config), else the default (the mlp tower: its own hidden dims)."""
        return tuple(self.flops_reference or DEFAULT_FLOPS_REFERENCE)

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        raise NotImplementedError

    def served(self, code: int) -> nn.Module:
        return Logits(self)

    def private_parameters(self, code: int) -> PrivateParams:
        """By default the domain's own embedding row (read only by rows of that domain);
        models with per-domain parameters add theirs."""
        emb = self.embedding
        return [(emb.table.weight, int(emb.offsets[emb.order[0]]) + code)]

    def domain_params(self, code: int) -> int:
        table = {id(p) for p in self.embedding.parameters()}
        return sum(p.numel() for p in self.served(code).parameters() if id(p) not in table)
