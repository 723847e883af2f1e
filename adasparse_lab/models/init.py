"""Initial weights of every model, as one recipe applied after construction (``model.init``).

FuxiCTR, the library the CTR field benchmarks with, initialises every categorical embedding
at N(0, 1e-4) and every ``nn.Linear`` with xavier_normal and a zero bias; before issue 23 we
kept PyTorch's linear defaults (kaiming-uniform weights and biases) with an N(0, 0.05) table.
The shipped recipe (conf/model/_init.yaml) is xavier_normal with the N(0, 0.05) table: each
choice measured alone by ``python -m adasparse_lab.bench --only recipe`` (docs/benchmarks.md).
A near-zero table helps where ids are seen once or twice (codes that training barely updates
start near zero instead of adding noise) and costs test AUC where ids carry signal and the
training is short, as on the synthetic data.

A module built with a deliberate initialisation of its own (APG's generator starts near the
identity) says so with ``keeps_init = True`` and is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.blocks import check_choice
from adasparse_lab.models.embedding import FieldEmbedding

LINEAR_INITS = ("xavier_normal", "torch")


@dataclass(frozen=True)
class InitSettings:
    """``embedding_std``: std of the N(0, std) categorical table; ``linear``: xavier_normal
    (zero bias) or torch (PyTorch's default, as constructed)."""

    embedding_std: float = 0.05
    linear: str = "xavier_normal"

    def __post_init__(self) -> None:
        if not self.embedding_std > 0:
            raise ConfigError(f"model.init.embedding_std={self.embedding_std} must be > 0")
        check_choice("model.init.linear", self.linear, LINEAR_INITS)

    @classmethod
    def from_config(cls, raw) -> InitSettings | None:
        """From the ``model.init`` mapping; unknown keys are named. None where the config has
        no ``model.init`` (stored before it existed): the weights stay as constructed, as the
        run that stored it drew them."""
        if raw is None:
            return None
        raw = dict(raw)
        unknown = sorted(set(raw) - {"embedding_std", "linear"})
        if unknown:
            raise ConfigError(
                f"model.init: unknown key(s) {unknown}; known: ['embedding_std', 'linear']"
            )
        return cls(**raw)


def initialise(model: nn.Module, settings: InitSettings) -> nn.Module:
    """Re-draw ``model``'s initial weights by ``settings`` (in module order, so the draws
    depend on the seed only); returns the model."""
    for module in model.modules():
        if getattr(module, "keeps_init", False):
            continue
        if isinstance(module, FieldEmbedding):
            nn.init.normal_(module.table.weight, std=settings.embedding_std)
        elif type(module) is nn.Linear and settings.linear == "xavier_normal":
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
