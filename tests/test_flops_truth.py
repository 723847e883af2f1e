"""Analytic FLOPs of the paper-form model (pruners included, input masking, low-rank pruners)
against FlopCounterMode on an independent per-sample executor that computes exactly what an
ideal sparse kernel serving that sample computes: every neuron of a layer and its pruner, then
only the kept columns of the next layer. Its predictions must equal the masked model's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.models.flops import tower_flops
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate
from adasparse_lab.run.build import data_fields
from adasparse_lab.run.evaluation import evaluate
from adasparse_lab.run.fit import TrainSettings, fit
from adasparse_lab.sparsity import LinearBand, SparsityRegularizer


def serve_one(model: AdaSparseModel, h0: torch.Tensor, e_d: torch.Tensor) -> torch.Tensor:
    """One sample (h0 [1, H_0], e_d [1, d_e]) through an ideal sparse kernel: returns the logit."""
    spec = model.spec
    readers = [*model.layers, model.head]
    x, cols = h0, torch.arange(h0.shape[1])
    for pos in range(len(model.widths)):
        if pos in model.positions:  # the pruner sees every neuron of this position
            v = model.pruners[str(pos)](torch.cat([x, e_d], dim=1))
            pi = spec.gate(v, model.alpha).pi
            cols = torch.nonzero(pi[0] != 0).flatten()
            x = (x * pi)[:, cols]
        else:
            cols = torch.arange(x.shape[1])
        nxt = readers[pos]
        x = F.linear(x, nxt.weight[:, cols], nxt.bias)  # only the kept inputs are read
        if pos < len(model.layers):
            x = torch.relu(x)
    return x.squeeze(-1)


def pruner_biases(model: AdaSparseModel) -> int:
    return sum(model.widths[p] for p in model.positions)


def trained_paper_model(data, gate, mask_input, rank):
    torch.manual_seed(0)
    model = AdaSparseModel(
        data_fields(data),
        embedding_dim=8,
        hidden_dims=(32, 16),
        pruner=PrunerSpec(gate=gate, mask_input=mask_input, rank=rank),
    )
    settings = TrainSettings(epochs=1, batch_size=512, seed=0, progress=False)
    fit(model, data, settings, SparsityRegularizer(), LinearBand(0.3, 0.5, end=0.5))
    # One short epoch does not reach the band: spread the pruners' output biases so that
    # about half of the neurons are pruned, sample by sample, and the count really varies.
    with torch.no_grad():
        for pruner in model.pruners.values():
            last = pruner[-1] if isinstance(pruner, torch.nn.Sequential) else pruner
            last.bias.normal_(0.0, 1.0)
    model.set_alpha(5.0)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    "gate, mask_input, rank",
    [
        (FusionGate(2.0, 0.25), False, None),
        (FusionGate(2.0, 0.25), True, None),
        (BinarizationGate(0.25), True, 4),
        (FusionGate(2.0, 0.25), False, 4),
        (ScalingGate(2.0), False, None),
    ],
)
def test_paper_form_flops_equal_flop_counter_on_served_samples(tiny_data, gate, mask_input, rank):
    model = trained_paper_model(tiny_data, gate, mask_input, rank)
    split = tiny_data.splits["val"]
    ev = evaluate(model, tiny_data, "val")
    if gate.has_zeros:
        assert float(ev.sparsity.ratio.mean()) > 0.1  # the check runs on a really pruned model
    shape = model.tower_shape()
    checked = 0
    for k in range(tiny_data.n_domains):
        for i in torch.nonzero(split.domain == k).flatten()[:3].tolist():
            cat, dense = split.cat[i : i + 1], split.dense[i : i + 1]
            with torch.no_grad():
                out = model(cat, dense)
                e_d, h0 = model.embedding(cat, dense)
                with FlopCounterMode(display=False) as counter:
                    logit = serve_one(model, h0, e_d)
            kept = torch.stack([m.sum(1) for m in out.keep], 1)
            analytic = tower_flops(shape, kept)
            # FlopCounterMode counts multiply-adds (2 per MAC); biases are counted apart.
            expected = analytic.matmul + analytic.pruner - pruner_biases(model)
            assert counter.get_total_flops() == pytest.approx(float(expected))
            assert torch.allclose(logit, out.logits, atol=1e-5, rtol=1e-5)
            checked += 1
    assert checked >= tiny_data.n_domains


@pytest.mark.slow
def test_per_domain_flops_are_the_mean_of_served_samples(tiny_data):
    model = trained_paper_model(tiny_data, FusionGate(2.0, 0.25), True, 4)
    split = tiny_data.splits["val"]
    ev = evaluate(model, tiny_data, "val")
    k = 0
    rows = torch.nonzero(split.domain == k).flatten()
    total = 0.0
    with torch.no_grad():
        for i in rows.tolist():
            cat, dense = split.cat[i : i + 1], split.dense[i : i + 1]
            e_d, h0 = model.embedding(cat, dense)
            with FlopCounterMode(display=False) as counter:
                serve_one(model, h0, e_d)
            total += counter.get_total_flops()
    bias_and_pruner_bias = ev.flops.breakdown["bias"][k] + pruner_biases(model)
    assert total / len(rows) + bias_and_pruner_bias == pytest.approx(ev.flops.per_domain[k])
