"""FLOPs against independent counts, and compacted networks against the masked model."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adasparse_lab.errors import ConfigError
from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.models.compact import compact_model, compact_tower
from adasparse_lab.models.flops import TowerShape, dense_flops, tower_flops
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate
from adasparse_lab.run.build import data_fields
from adasparse_lab.run.evaluation import evaluate


def sparse_domain_model(data, gate, mask_input=False, seed=0):
    """A domain-input model whose pruners give different, substantial sparsity per domain."""
    torch.manual_seed(seed)
    model = AdaSparseModel(
        data_fields(data),
        embedding_dim=8,
        hidden_dims=(32, 16),
        pruner=PrunerSpec(gate=gate, inputs="domain", mask_input=mask_input),
    )
    model.set_alpha(5.0)
    with torch.no_grad():
        for p in model.pruners.values():
            p.weight.normal_(0.0, 20.0)  # e_d entries are ~0.05: gives v of a few units
            p.bias.zero_()
    return model.eval()


def test_dense_flops_by_hand():
    # 10 -> 4 -> 3 -> 1: 2*10*4+4 + 2*4*3+3 + 2*3*1+1
    assert dense_flops([10, 4, 3]) == 84 + 27 + 7


def test_paper_form_flops_by_hand():
    shape = TowerShape(
        widths=[10, 4, 3], masked=[1, 2], pruner_in_domain_dim=2, sample_dependent=True, zeros=True
    )
    kept = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    fl = tower_flops(shape, kept)
    # Layer 1 computes all 4 outputs from 10 inputs; layer 2 all 3 outputs from the kept
    # inputs of layer 1; the head reads the kept outputs of layer 2.
    matmul = [2 * 10 * 4 + 2 * 2 * 3 + 2 * 1 * 1, 2 * 10 * 4 + 2 * 4 * 3 + 2 * 3 * 1]
    pruner = (2 * (4 + 2) * 4 + 4) + (2 * (3 + 2) * 3 + 3)
    assert fl.matmul.tolist() == matmul
    assert fl.bias.tolist() == [4 + 3 + 1] * 2
    assert fl.pruner.tolist() == [pruner] * 2
    # Nothing pruned: paper form costs dense + pruners, i.e. more than the dense model.
    full = tower_flops(shape, torch.tensor([[4.0, 3.0]]))
    assert full.total.item() == dense_flops([10, 4, 3]) + pruner


def test_scaling_gate_saves_nothing(tiny_data):
    torch.manual_seed(0)
    model = AdaSparseModel(
        data_fields(tiny_data),
        8,
        (32, 16),
        pruner=PrunerSpec(gate=ScalingGate(2.0)),
    )
    ev = evaluate(model, tiny_data, "val")
    pruner_cost = sum(2 * (w + 8) * w + w for w in (32, 16))
    assert ev.flops.overall == pytest.approx(ev.flops.dense + pruner_cost)
    assert ev.flops.ratio > 1.0
    assert float(ev.sparsity.ratio.max()) == 0.0


@pytest.mark.parametrize("gate", [FusionGate(2.0, 0.5), BinarizationGate(0.5)])
@pytest.mark.parametrize("mask_input", [False, True])
def test_compacted_flops_and_predictions_match(tiny_data, gate, mask_input):
    model = sparse_domain_model(tiny_data, gate, mask_input)
    ev = evaluate(model, tiny_data, "val")
    split = tiny_data.splits["val"]
    assert 0.1 < float(ev.sparsity.ratio.mean()) < 0.9  # a real test: neurons were pruned
    for k in range(tiny_data.n_domains):
        rows = split.domain == k
        tower = compact_tower(model, domain_code=k + 1)
        # 1) analytic FLOPs == FlopCounterMode on the physically smaller network
        h0 = torch.zeros(1, model.widths[0])
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            tower(h0)
        assert counter.get_total_flops() == pytest.approx(ev.flops.breakdown["matmul"][k])
        assert sum(layer.out_features for layer in tower.layers) == pytest.approx(
            ev.flops.breakdown["bias"][k]
        )
        assert ev.flops.breakdown["pruner"][k] == 0.0
        # 2) compacted predictions == masked model
        with torch.no_grad():
            masked = model(split.cat[rows], split.dense[rows]).logits
            compact = compact_model(model, k + 1)(split.cat[rows], split.dense[rows])
        assert torch.allclose(masked, compact, atol=1e-5, rtol=1e-5)
        kept = [int((kp[k] > 0).sum()) for kp in ev.sparsity.keep_prob]
        assert tower.widths()[: len(kept)] == kept if mask_input else tower.widths()[1:-1] == kept


def test_compaction_refuses_paper_form(tiny_data):
    model = AdaSparseModel(
        data_fields(tiny_data),
        8,
        (32, 16),
        pruner=PrunerSpec(gate=FusionGate()),
    )
    with pytest.raises(ConfigError, match="inputs='domain'"):
        compact_tower(model, 1)
