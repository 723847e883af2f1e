"""The FuxiCTR side of the peer benchmark (bench/peer.py): FuxiCTR 2.3.10's layers and training
recipe on our prepared rows. Imported only when FuxiCTR is installed (``pip install .[peer]``).

What comes from the fuxictr 2.3.10 wheel, unchanged:
- ``fuxictr.pytorch.models.BaseModel``: the whole training recipe. ``fit`` (Adam via
  ``compile``, ``binary_cross_entropy`` on sigmoid outputs, gradient norm clipped at 10,
  validation once per epoch on ``monitor="AUC"`` (overall AUC), the best epoch's weights saved
  and reloaded at the end, early stopping after 2 epochs without improvement, the learning
  rate divided by 10 at each such epoch (``reduce_lr_on_plateau``)), ``reset_parameters``
  (xavier_normal_ weights and zero biases for every nn.Linear) and ``predict``.
- ``fuxictr.features.FeatureMap``: filled from our vocabularies (bench/peer_protocol.py) instead
  of its JSON file; its ``set_column_index``, ``get_num_fields`` and ``sum_emb_out_dim``.
- ``fuxictr.pytorch.layers.FeatureEmbedding``: one nn.Embedding per categorical field
  (normal init, std 1e-4), an nn.Linear(1, D, bias=False) per numeric feature.
- ``MLP_Block`` (Linear + ReLU stacks) and ``CrossNetV2`` (x_{l+1} = x_l + x_0 * W_l x_l + b_l).
- ``fuxictr.pytorch.torch_utils.seed_everything``: the seeding of FuxiCTR's run_expid.py.
- ``fuxictr.pytorch.dataloaders.RankDataLoader`` (NpzDataLoader: a per-row Dataset over the
  stacked columns, ``default_collate``, one worker process) over .npz files holding our
  prepared rows, by default (``--peer-fuxictr-loader npz``): FuxiCTR as its users run it, its
  loader inside the timed epochs. ``--peer-fuxictr-loader memory`` feeds our tensors as its
  batch dicts instead (its training step alone).

What is written here, from those layers (the model classes: the wheel ships no DNN and no
MMoE, its model_zoo/LongCTR/DCNv2 expects behaviour sequences, and its model_zoo/multitask
only imports folders it does not ship):
- ``PeerDNN``: FeatureEmbedding -> MLP_Block(hidden, output_dim=1) -> sigmoid, the layout of
  FuxiCTR's DNN (model_zoo/DNN on GitHub).
- ``PeerDCNv2``: FeatureEmbedding -> CrossNetV2 -> MLP_Block(hidden) -> Linear(., 1) -> sigmoid,
  the "stacked" structure of the wheel's model_zoo/LongCTR/DCNv2/DCNv2.py without its sequence
  inputs.
- ``PeerMMoE``: FuxiCTR's MMoE layout (model_zoo/multitask/MMoE on GitHub: MLP_Block experts,
  per-task MLP_Block gates with a softmax, per-task MLP_Block towers) with domains as tasks, as
  our model=mmoe: one gate and tower per code of the domain field; every row runs every
  domain's gate and tower and keeps its own domain's output (FuxiCTR's multitask models output
  every task for every row), one label, so BaseModel's single-label recipe applies.
- ``_Timed``: counts the seconds of training epochs without their validation, the epochs run
  and the epoch whose weights were saved; the recipe itself is BaseModel's.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from fuxictr.version import __version__ as VERSION
from omegaconf import DictConfig
from torch import nn

from adasparse_lab.bench.peer_protocol import (
    DictBatches,
    PeerProtocol,
    SideRun,
    feature_specs,
    label_name,
    score_split,
    write_npz,
)
from adasparse_lab.data.prepared import PreparedData

__all__ = ["BUILDERS", "VERSION", "feature_map", "run_fuxictr"]


def feature_map(data: PreparedData, embedding_dim: int) -> FeatureMap:
    """FuxiCTR's FeatureMap of the prepared fields (in place of FeatureMap.load's JSON)."""
    fmap = FeatureMap("peer", data_dir="")
    fmap.features = OrderedDict(feature_specs(data))
    fmap.labels = [label_name(data)]
    fmap.default_emb_dim = embedding_dim
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    return fmap


class _Timed(BaseModel):
    """BaseModel whose fit also records ``train_seconds`` (training epochs, validation
    excluded), ``epochs_run`` and ``best_epoch`` (the last epoch whose weights were saved)."""

    def fit(self, data_generator, epochs=1, validation_data=None, **kwargs):
        self.train_seconds, self.eval_seconds, self.epochs_run, self.best_epoch = 0.0, 0.0, 0, 0
        super().fit(data_generator, epochs=epochs, validation_data=validation_data, **kwargs)

    def train_epoch(self, data_generator):
        t0, eval0 = time.perf_counter(), self.eval_seconds
        super().train_epoch(data_generator)
        self.train_seconds += time.perf_counter() - t0 - (self.eval_seconds - eval0)
        self.epochs_run += 1

    def eval_step(self):
        t0 = time.perf_counter()
        super().eval_step()
        self.eval_seconds += time.perf_counter() - t0

    def save_weights(self, checkpoint):
        self.best_epoch = self._epoch_index + 1
        super().save_weights(checkpoint)

    def _finish(self, learning_rate: float, kwargs: dict) -> None:
        """The tail of every FuxiCTR model's __init__: optimiser, loss, init, device."""
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()


class PeerDNN(_Timed):
    def __init__(self, feature_map, embedding_dim, hidden_units, learning_rate, **kwargs):
        super().__init__(feature_map, model_id="DNN", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp = MLP_Block(feature_map.sum_emb_out_dim(), list(hidden_units), output_dim=1)
        self._finish(learning_rate, kwargs)

    def forward(self, inputs):
        h0 = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)  # [B, H_0]
        return {"y_pred": self.output_activation(self.mlp(h0))}


class PeerDCNv2(_Timed):
    """DCNv2, structure "stacked": the deep tower reads the cross network's output."""

    def __init__(
        self, feature_map, embedding_dim, hidden_units, cross_layers, learning_rate, **kwargs
    ):
        super().__init__(feature_map, model_id="DCNv2", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        width = feature_map.sum_emb_out_dim()
        self.crossnet = CrossNetV2(width, cross_layers)
        self.stacked_dnn = MLP_Block(width, list(hidden_units))
        self.fc = nn.Linear(hidden_units[-1], 1)
        self._finish(learning_rate, kwargs)

    def forward(self, inputs):
        h0 = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
        logit = self.fc(self.stacked_dnn(self.crossnet(h0)))
        return {"y_pred": self.output_activation(logit)}


class PeerMMoE(_Timed):
    """MMoE with the codes of ``domain_feature`` (``n_codes`` of them) as tasks.
    h^0 [B, H_0] -> experts [B, E, d]; per code k: softmax gate [B, E], mixture [B, d],
    tower -> [B, 1]; logits [B, V]; each row keeps the column of its code."""

    def __init__(
        self, feature_map, embedding_dim, n_experts, expert_units, tower_units,
        domain_feature, n_codes, learning_rate, **kwargs,
    ):  # fmt: skip
        super().__init__(feature_map, model_id="MMoE", **kwargs)
        self.domain_feature = domain_feature
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        width, expert = feature_map.sum_emb_out_dim(), list(expert_units)
        self.experts = nn.ModuleList(MLP_Block(width, expert) for _ in range(n_experts))
        self.gates = nn.ModuleList(
            MLP_Block(width, [], output_dim=n_experts, output_activation="softmax")
            for _ in range(n_codes)
        )
        self.towers = nn.ModuleList(
            MLP_Block(expert[-1], list(tower_units), output_dim=1) for _ in range(n_codes)
        )
        self._finish(learning_rate, kwargs)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        h0 = self.embedding_layer(X, flatten_emb=True)
        experts = torch.stack([e(h0) for e in self.experts], dim=1)  # [B, E, d]
        logits = torch.cat(
            [
                tower(torch.sum(gate(h0).unsqueeze(-1) * experts, dim=1))
                for gate, tower in zip(self.gates, self.towers)
            ],
            dim=1,
        )  # [B, V]
        code = X[self.domain_feature].long().view(-1, 1)
        return {"y_pred": self.output_activation(logits.gather(1, code))}


def build_dnn(fmap: FeatureMap, model_cfg: DictConfig, data: PreparedData, **common):
    return PeerDNN(fmap, model_cfg.embedding_dim, list(model_cfg.hidden_dims), **common)


def build_dcnv2(fmap: FeatureMap, model_cfg: DictConfig, data: PreparedData, **common):
    hidden, layers = list(model_cfg.hidden_dims), model_cfg.cross_layers
    return PeerDCNv2(fmap, model_cfg.embedding_dim, hidden, layers, **common)


def build_mmoe(fmap: FeatureMap, model_cfg: DictConfig, data: PreparedData, **common):
    """One gate and tower per code of the first domain-aware field (our model's routing)."""
    position = data.domain_feature_index()[0]
    domain = list(fmap.features)[position]
    return PeerMMoE(
        fmap, model_cfg.embedding_dim, model_cfg.n_experts, list(model_cfg.expert_dims),
        list(model_cfg.tower_dims), domain, data.vocab_sizes[position], **common,
    )  # fmt: skip


# Our model config -> FuxiCTR's model of the same sizes; keys are bench/peer.py's model names.
BUILDERS = {"dnn": build_dnn, "dcnv2": build_dcnv2, "mmoe": build_mmoe}


def _loaders(data: PreparedData, fmap: FeatureMap, protocol: PeerProtocol, workdir: str):
    """(train, val, test) batches for FuxiCTR: its RankDataLoader over npz files of our rows
    (protocol.fuxictr_loader="npz", as its run_expid.py feeds a model) or our tensors as its
    batch dicts ("memory")."""
    if protocol.fuxictr_loader == "memory":
        return (
            DictBatches(data, "train", protocol.batch_size, shuffle=True),
            DictBatches(data, "val", protocol.batch_size),
            DictBatches(data, "test", protocol.eval_batch_size),
        )
    paths = {s: os.path.join(workdir, f"{s}.npz") for s in data.splits}
    for split, path in paths.items():  # once per run of the section: every fit reads the same
        if not os.path.exists(path):
            write_npz(data, split, path)
    return RankDataLoader(
        fmap, stage="both", train_data=paths["train"], valid_data=paths["val"],
        test_data=paths["test"], batch_size=protocol.batch_size, shuffle=True, data_format="npz",
    )  # fmt: skip


def run_fuxictr(
    name: str,
    model_cfg: DictConfig,
    data: PreparedData,
    protocol: PeerProtocol,
    seed: int,
    workdir: str,
) -> SideRun:
    """Seed as FuxiCTR does, build ``name`` with the sizes of ``model_cfg``, fit with BaseModel's
    recipe (checkpoints under ``workdir``), score the test rows."""
    seed_everything(seed)
    fmap = feature_map(data, int(model_cfg.embedding_dim))
    model = BUILDERS[name](
        fmap, model_cfg, data, learning_rate=protocol.lr, gpu=-1, verbose=0, model_root=workdir,
        metrics=["logloss", "AUC"], optimizer="adam", loss="binary_crossentropy",
    )  # fmt: skip
    os.makedirs(model.model_dir, exist_ok=True)
    train, val, test = _loaders(data, fmap, protocol, workdir)
    t0 = time.perf_counter()
    model.fit(train, epochs=protocol.epochs, validation_data=val)
    seconds = time.perf_counter() - t0
    scores = model.predict(test)
    test_auc, mean_domain = score_split(data.splits["test"], np.asarray(scores, np.float64))
    return SideRun(
        model=name,
        side="fuxictr",
        seed=seed,
        test_auc=test_auc,
        test_mean_domain_auc=mean_domain,
        best_epoch=model.best_epoch,
        epochs_run=model.epochs_run,
        samples_per_s=model.epochs_run * len(data.splits["train"]) / model.train_seconds,
        fit_seconds=seconds,
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
