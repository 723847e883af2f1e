"""AdaSparse (Yang et al., CIKM 2022) over an MLP backbone; with ``pruner=None`` the dense
shared model that every comparison uses as its reference row.

Shapes: B batch, F fields, D embedding dim, H_l width of hidden layer l, d_e = |e_d|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import Logits, ModelOutput, MultiDomainModel
from adasparse_lab.models.blocks import check_choice, check_dims
from adasparse_lab.models.compact import compact_model
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.flops import Flops, TowerShape, tower_flops
from adasparse_lab.models.fused_gates import fused_mask
from adasparse_lab.models.pruner_spec import PrunerSpec
from adasparse_lab.models.static_pruning import StaticMasks, StaticPruning

KERNELS = ("fast", "reference")


def _pruner(in_dim: int, width: int, rank: int | None) -> nn.Module:
    """The full pruner (one Linear) or its low-rank factorisation in_dim -> rank -> width."""
    if rank is None:
        return nn.Linear(in_dim, width)
    return nn.Sequential(nn.Linear(in_dim, rank, bias=False), nn.Linear(rank, width))


def _matmul_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives a matmul reading ``h`` (``h.dtype`` without autocast)."""
    device = h.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype


class AdaSparseModel(MultiDomainModel):
    """Embedding -> MLP with a mask after each hidden layer (and optionally on h^0) -> logit.

    The mask comes from a learned AdaSparse pruner (``PrunerSpec``) or from a pruning rival's
    static per-domain masks (``StaticPruning``); with ``pruner=None`` it is the dense model.

    ``kernel`` picks how a learned mask is computed, with the same values and gradients within
    float tolerance: 'reference' is the plain form (``cat([h, e_d])`` into the pruner Linear,
    the gate's straight-through tensors, then ``h * pi``); 'fast' splits every paper-form
    pruner product as W_h h + (W_e e_d + b), the e_d part of all pruners in one matmul, and
    runs gate and mask product as one autograd node (``fused_gates.fused_mask``).
    """

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        dropout: float = 0.0,
        pruner: PrunerSpec | StaticPruning | None = None,
        kernel: str = "fast",
    ) -> None:
        super().__init__()
        self.kernel = check_choice("model.kernel", kernel, KERNELS)
        hidden_dims = check_dims("model.hidden_dims", hidden_dims)
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1)")
        widths = [self._embed(fields, embedding_dim), *hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], 1)
        self.dropout = nn.Dropout(dropout)
        self.spec = pruner
        self.widths = widths
        d_e = self.embedding.domain_dim
        # Masked positions: 0 is h^0 (the input embedding), l >= 1 the output of hidden layer l.
        if pruner is None:
            self.positions: list[int] = []
        else:
            self.positions = ([0] if pruner.mask_input else []) + list(range(1, len(widths)))
        learned = isinstance(pruner, PrunerSpec)
        paper_form = learned and pruner.inputs == "hidden+domain"
        self.pruners = nn.ModuleDict(
            {
                str(p): _pruner(widths[p] + d_e if paper_form else d_e, widths[p], pruner.rank)
                for p in (self.positions if learned else [])
            }
        )
        # Static masks are indexed by the code of the domain field (the first domain field).
        self.static = (
            StaticMasks(pruner, {p: widths[p] for p in self.positions}, self.n_codes)
            if isinstance(pruner, StaticPruning)
            else None
        )
        # Masks from the domain alone, one domain field: pruners and gates run once per code of
        # that field ([V, d_e], V ~ the number of domains) and rows gather their code's mask,
        # instead of once per row: the same values and gradients at a fraction of the work.
        self.per_code = learned and pruner.inputs == "domain" and len(fields.domain_fields) == 1
        # alpha is state: saved in the state dict, set only by the trainer's schedule.
        self.register_buffer("alpha", torch.tensor(pruner.alpha_start if learned else 1.0))

    @property
    def learns_masks(self) -> bool:
        """True when the masks come from pruners trained through the sparsity regulariser."""
        return isinstance(self.spec, PrunerSpec)

    def set_alpha(self, value: float) -> None:
        self.alpha.fill_(value)

    def before_step(self, progress: float, band: tuple[float, float], final: bool = False) -> None:
        """The trainer's hook before each training step: anneal alpha (AdaSparse) or move the
        static masks towards the band centre (pruning rivals; at once when the band is
        ``final``)."""
        if isinstance(self.spec, PrunerSpec):
            self.set_alpha(self.spec.alpha_at(progress))
        elif self.static is not None:
            self.static.step((band[0] + band[1]) / 2, self._mask_weights(), final)

    def _mask_weights(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per masked position: (the Linear producing it, or empty for h^0; the one reading it)."""
        readers = [*self.layers, self.head]
        return {
            p: (
                self.layers[p - 1].weight if p else self.head.weight.new_empty(0),
                readers[p].weight,
            )
            for p in self.positions
        }

    def tower_shape(self) -> TowerShape:
        spec = self.spec
        learned = isinstance(spec, PrunerSpec)
        return TowerShape(
            widths=list(self.widths),
            masked=list(self.positions),
            pruner_in_domain_dim=self.embedding.domain_dim,
            sample_dependent=learned and spec.inputs == "hidden+domain",
            zeros=self.static is not None or (learned and spec.gate.has_zeros),
            pruner_rank=spec.rank if learned else None,
        )

    def domain_code(self, cat: torch.Tensor) -> torch.Tensor:
        """[B] code of the domain field (the first domain-aware field)."""
        return cat[:, self.embedding.order[0]]

    @torch.no_grad()
    def static_pi(self, domain_code: int) -> dict[int, torch.Tensor]:
        """Per masked position, the fixed weights [H_p] that multiply that domain's neurons.
        Only defined when masks depend on the domain alone (``inputs=domain`` or a rival)."""
        if self.static is not None:
            return {p: self.static.mask(p)[domain_code] for p in self.positions}
        spec = self.spec
        if not isinstance(spec, PrunerSpec) or spec.inputs != "domain":
            raise ConfigError(
                "compaction needs a static structure: pruner.inputs='domain' or a pruning rival "
                "(paper-form masks vary per sample)"
            )
        if self.embedding.n_domain_fields != 1:
            raise ConfigError("compaction needs exactly one domain-aware field (the domain column)")
        emb = self.embedding
        e_d = emb.table.weight[emb.offsets[int(emb.order[0])] + domain_code].unsqueeze(0)
        return {p: spec.gate(self.pruners[str(p)](e_d), self.alpha).pi[0] for p in self.positions}

    def _mask(self, pos: int, h: torch.Tensor, e_d: torch.Tensor, code, out) -> torch.Tensor:
        if self.static is not None:
            if self.training:
                self.static.observe(pos, h, code)
            keep = self.static.keep(pos, code)
            out.keep.append(keep)
            out.pi.append(keep)
            return h * keep
        if self.kernel == "fast":
            return self._mask_fast(pos, h, e_d, code, out)
        x = torch.cat([h, e_d], dim=1) if self.spec.inputs == "hidden+domain" else e_d
        gated = self.spec.gate(self.pruners[str(pos)](x), self.alpha)
        keep, pi = gated.keep, gated.pi
        if self.per_code:  # [V, H] -> the rows' [B, H]
            keep, pi = keep.index_select(0, code), pi.index_select(0, code)
        out.keep.append(keep)
        out.pi.append(pi)
        return h * pi

    def _mask_fast(self, pos: int, h: torch.Tensor, e_d, code, out) -> torch.Tensor:
        """``_mask`` of a learned pruner on the fast kernel. ``e_d``: for the paper form with
        one domain field, the per-code terms of ``_code_terms``; otherwise e_d itself."""
        pruner = self.pruners[str(pos)]
        if isinstance(e_d, dict):  # paper form: v = (W_e e_code + b)[code] + W_h h
            first = pruner if isinstance(pruner, nn.Linear) else pruner[0]
            dt = _matmul_dtype(h)  # in-place addmm_ is outside autocast's casts: cast here
            w_h = first.weight[:, : self.widths[pos]].to(dt).t()
            v = e_d[pos].index_select(0, code).to(dt).addmm_(h.to(dt), w_h)
            if first is not pruner:  # low rank: [B, r] -> [B, H]
                v = pruner[1](v)
        elif self.spec.inputs == "hidden+domain":
            v = pruner(torch.cat([h, e_d], dim=1))
        else:
            v = pruner(e_d)
        if self.per_code:  # gate the V codes' rows, then gather: as the reference path
            gated = self.spec.gate(v, self.alpha)
            keep, pi = gated.keep.index_select(0, code), gated.pi.index_select(0, code)
            y = h * pi
        else:
            y, keep, pi = fused_mask(self.spec.gate, v, h, self.alpha)
        out.keep.append(keep)
        out.pi.append(pi)
        return y

    def _code_terms(self) -> dict[int, torch.Tensor]:
        """Per masked position, the e_d part of its paper-form pruner's first Linear for every
        code of the (one) domain field: W_e e_code + b ([V, H_p], or [V, r] without bias for a
        low-rank pruner), all positions in one matmul [V, d_e] x [d_e, sum_p H_p]. Rows gather
        their code's term instead of multiplying [B, d_e] by W_e per position."""
        firsts = [
            p if isinstance(p, nn.Linear) else p[0]
            for p in (self.pruners[str(q)] for q in self.positions)
        ]
        weight = torch.cat([f.weight[:, self.widths[q] :] for f, q in zip(firsts, self.positions)])
        bias = None if firsts[0].bias is None else torch.cat([f.bias for f in firsts])
        terms = F.linear(self._code_embeddings(), weight, bias)
        return dict(zip(self.positions, terms.split([f.out_features for f in firsts], dim=1)))

    def _code_terms_apply(self) -> bool:
        """The fast kernel gathers per-code e_d terms: paper-form pruners, one domain field."""
        spec = self.spec
        return (
            self.kernel == "fast"
            and isinstance(spec, PrunerSpec)
            and spec.inputs == "hidden+domain"
            and self.embedding.n_domain_fields == 1
            and bool(self.positions)
        )

    def _code_embeddings(self) -> torch.Tensor:
        """[V, d_e]: the domain field's embedding of each of its codes (stop-gradient kept)."""
        e = self.code_embeddings()
        return e.detach() if self.spec.stop_gradient else e

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        e_d, h = self.embedding(cat, dense)  # e_d [B, d_e], h [B, H_0]
        return self._tower(cat, e_d, h)

    def _tower(self, cat: torch.Tensor, e_d: torch.Tensor, h: torch.Tensor) -> ModelOutput:
        """The masked MLP on h [B, H_0] (h^0, or what a backbone such as DCN-V2 puts there)."""
        if self.per_code:  # e_d of every code of the domain field, not of every row
            e_d = self._code_embeddings()
        elif isinstance(self.spec, PrunerSpec) and self.spec.stop_gradient:
            e_d = e_d.detach()
        code = self.domain_code(cat) if self.static is not None or self.per_code else None
        if self._code_terms_apply():
            e_d, code = self._code_terms(), self.domain_code(cat)  # position -> [V, H_p]
        out = ModelOutput(logits=h.new_empty(0), keep=[], pi=[])
        if 0 in self.positions:
            h = self._mask(0, h, e_d, code, out)
        for pos, layer in enumerate(self.layers, start=1):
            h = self.dropout(torch.relu(layer(h)))
            if pos in self.positions:
                h = self._mask(pos, h, e_d, code, out)
        out.logits = self.head(h).squeeze(-1)
        return out

    # The zoo interface (models/base.py) beyond what the methods above already provide.

    def reference_dims(self) -> tuple[int, ...]:
        return tuple(self.flops_reference or self.widths[1:])

    @property
    def masks_zero(self) -> bool:
        return self.tower_shape().zeros

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        """Per-sample FLOPs from the tower's shape and the kept counts (flops.tower_flops)."""
        fl = tower_flops(self.tower_shape(), kept)
        B = len(code)
        return Flops(fl.matmul.expand(B), fl.bias.expand(B), fl.pruner.expand(B))

    @property
    def static_structure(self) -> bool:
        """Masks that depend on the domain alone (a pruning rival or ``inputs=domain``): each
        domain's network can be compacted. Otherwise masks vary per sample."""
        return self.static is not None or (self.learns_masks and self.spec.inputs == "domain")

    def served(self, code: int) -> nn.Module:
        """The compacted tower where the structure is static, else the masked model."""
        return compact_model(self, code) if self.static_structure else Logits(self)
