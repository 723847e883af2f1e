"""A serving bundle: everything needed to score raw rows (the training table's columns) with a
trained model, without the training code's config, data cache or study.

Layout of a bundle directory::

    manifest.json        schema, dense scale, domain names, which net serves which domain,
                         the trial it came from and its test metrics
    vocab/<column>.parquet   per categorical column: its values and codes 1..V (0 = OOV)
    model.pt2            torch.export program of the whole (masked) model: (cat [B, F],
                         dense [B, Dn]) -> logits [B]; serves every row without a domain net
                         (a zoo model served per domain: its route of the OOV domain code 0)
    nets/domain-<k>.pt2  torch.export program of the fixed network serving domain k, same
                         signature: AdaSparse's compacted tower (static structures only:
                         pruner.inputs=domain, pruning rivals) or a zoo model's ``served``
                         route (mmoe, ple, shared_bottom, star, apg, dcnv2; models/base.py)

Rows are encoded with the training rules (``data.prepare.encode_features``: unseen values ->
OOV code 0, dense signed log1p and the train mean/std), then routed by their domain: a domain
with a net is served by it, everything else (sample-dependent masks, models without a
per-domain served form, a domain unseen in training) by ``model.pt2``. A model that
torch.export cannot trace is refused with a ConfigError.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from adasparse_lab.data.prepare import Encoder, encode_features, integral_codes
from adasparse_lab.data.schema import Schema
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.models.adasparse import AdaSparseModel
from adasparse_lab.models.base import Logits
from adasparse_lab.run.latency import static_network

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def save_exported(
    module: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path
) -> None:
    """``torch.export`` of ``module`` in eval mode with a dynamic batch dimension, saved as a
    .pt2 archive (TorchScript is deprecated in torch 2.x)."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(
            module.eval(), example, dynamic_shapes=({0: batch}, {0: batch}), strict=False
        )
    torch.export.save(program, str(path))


def load_exported(path: Path) -> nn.Module:
    # torch warns that the batch symbol of an index_select's output "did not appear in the
    # graph" when loading (a serialisation detail, outputs unaffected): not for users' eyes.
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        return torch.export.load(str(path)).module()
    finally:
        serde.setLevel(level)


def domain_nets(model: nn.Module, schema: Schema, n_domains: int) -> dict[int, nn.Module]:
    """Domain index k -> the fixed network that serves it (a compacted AdaSparse tower, a zoo
    model's route or folded net: ``model.served``), for models keyed by the domain column
    alone where every domain has one; empty otherwise (the whole model serves)."""
    if schema.domain_features != (schema.domain,) or not hasattr(model, "served"):
        return {}
    nets = {k: static_network(model, k) for k in range(n_domains)}
    return {} if any(net is None for net in nets.values()) else nets


def fallback_net(model: nn.Module, nets: dict[int, nn.Module]) -> nn.Module:
    """What serves rows no domain net takes (a domain unseen in training: OOV code 0): the
    whole model; for a zoo model served per domain, its route of code 0 (what the whole model
    computes for those rows, without the data-dependent routing torch.export cannot trace)."""
    if nets and type(model) is not AdaSparseModel:
        oov = static_network(model, -1)
        if oov is not None:
            return oov
    return Logits(model)


def export_net(module: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path):
    """``save_exported``; a module torch.export cannot trace is a ConfigError naming it."""
    try:
        save_exported(module, example, path)
    except Exception as err:
        name = getattr(module, "model", module).__class__.__name__
        raise ConfigError(
            f"cannot export {name} ({path.name}) with torch.export: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err


def write_bundle(
    out: Path,
    model: nn.Module,
    schema: Schema,
    encoder: Encoder,
    domain_names: list[str],
    example: tuple[torch.Tensor, torch.Tensor],
    info: dict,
) -> Path:
    """Write the bundle of a trained ``model`` into ``out`` (created); ``example`` is a batch
    of encoded rows (cat, dense) used to trace; ``info`` goes into the manifest as it is."""
    out = Path(out)
    (out / "vocab").mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    cat, dense = example
    served = domain_nets(model, schema, len(domain_names))
    export_net(fallback_net(model, served), (cat, dense), out / "model.pt2")
    nets = {}
    for k, net in served.items():
        (out / "nets").mkdir(exist_ok=True)
        nets[domain_names[k]] = f"nets/domain-{k}.pt2"
        export_net(net, (cat, dense), out / nets[domain_names[k]])
    vocab_files = {}
    for i, col in enumerate(schema.categorical):
        vocab_files[col] = f"vocab/{i}.parquet"
        encoder.vocabs[col].write_parquet(out / vocab_files[col])
    manifest = {
        "format_version": FORMAT_VERSION,
        "schema": asdict(schema),
        "dense_log1p": encoder.dense_log1p,
        "dense_mean": encoder.mean.tolist(),
        "dense_std": encoder.std.tolist(),
        "domain_names": list(domain_names),
        "vocab": vocab_files,
        "model": "model.pt2",
        "nets": nets,
        "torch": torch.__version__,
        **info,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, default=float))
    return out


@dataclass
class Encoded:
    """Raw rows as model inputs: cat [N, F] codes, dense [N, Dn], domain index [N] (-1 unseen)."""

    cat: torch.Tensor
    dense: torch.Tensor
    domain: torch.Tensor


class Bundle:
    """A loaded bundle: ``predict(frame)`` -> click probabilities [N] of raw rows."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise DataError(f"{self.path}: not a serving bundle (no {MANIFEST})")
        self.manifest = json.loads(file.read_text())
        self.schema = Schema.from_config(**self.manifest["schema"])
        self.encoder = Encoder(
            vocabs={c: pl.read_parquet(self.path / f) for c, f in self.manifest["vocab"].items()},
            mean=np.array(self.manifest["dense_mean"], dtype=np.float64),
            std=np.array(self.manifest["dense_std"], dtype=np.float64),
            dense_log1p=self.manifest["dense_log1p"],
        )
        self.domain_names: list[str] = self.manifest["domain_names"]
        self.model = load_exported(self.path / self.manifest["model"])
        index = {name: k for k, name in enumerate(self.domain_names)}
        self.nets = {
            index[name]: load_exported(self.path / f) for name, f in self.manifest["nets"].items()
        }

    @property
    def feature_columns(self) -> list[str]:
        return [*self.schema.categorical, *self.schema.dense]

    def encode(self, frame: pl.DataFrame) -> Encoded:
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"input rows lack column(s) {missing}; the bundle needs {self.feature_columns}"
            )
        table = encode_features(integral_codes(frame, self.schema), self.schema, self.encoder)
        n_cat, n_dense = len(self.schema.categorical), len(self.schema.dense)
        cat = torch.from_numpy(
            table.select(f"c{i}" for i in range(n_cat)).to_numpy().astype(np.int64)
        )
        dense = (
            torch.from_numpy(
                table.select(f"x{j}" for j in range(n_dense)).to_numpy().astype(np.float32)
            )
            if n_dense
            else torch.zeros(len(table), 0)
        )
        return Encoded(cat, dense, cat[:, self.schema.categorical.index(self.schema.domain)] - 1)

    @torch.no_grad()
    def logits(self, rows: Encoded, compact: bool = True) -> torch.Tensor:
        """[N] logits; each domain with a compacted net is served by it (unless not ``compact``)."""
        out = torch.empty(len(rows.domain))
        rest = torch.ones(len(rows.domain), dtype=torch.bool)
        for k, net in self.nets.items() if compact else ():
            idx = torch.nonzero(rows.domain == k).flatten()
            if idx.numel():
                out[idx] = net(rows.cat[idx], rows.dense[idx])
                rest[idx] = False
        idx = torch.nonzero(rest).flatten()
        if idx.numel():
            out[idx] = self.model(rows.cat[idx], rows.dense[idx])
        return out

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """[N] click probabilities of raw rows with the training table's feature columns."""
        return torch.sigmoid(self.logits(self.encode(frame))).numpy()
