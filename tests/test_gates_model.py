"""Gates, the model and the defects of the open-source versions (ADASPARSE.md)."""

import io

import pytest
import torch

from adasparse_lab.errors import ConfigError
from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate
from adasparse_lab.run.build import data_fields
from adasparse_lab.run.evaluation import evaluate
from adasparse_lab.run.fit import TrainSettings, fit
from adasparse_lab.sparsity import ConstantBand, SparsityRegularizer


def make_model(data, gate=None, **spec):
    pruner = None if gate is None else PrunerSpec(gate=gate, **spec)
    torch.manual_seed(0)
    return AdaSparseModel(
        data_fields(data),
        embedding_dim=8,
        hidden_dims=(32, 16),
        pruner=pruner,
    )


class TestGates:
    v = torch.linspace(-6, 6, 101).reshape(1, -1)

    def test_binarization_is_exactly_zero_or_one_never_minus_one(self):
        out = BinarizationGate(eps=0.25)(self.v, torch.tensor(1.0))
        assert set(out.pi.unique().tolist()) == {0.0, 1.0}
        expected = (torch.sigmoid(self.v) > 0.25).float()
        assert torch.equal(out.pi, expected) and torch.equal(out.keep, expected)

    def test_fusion_zeroes_below_eps_and_scales_above(self):
        alpha = torch.tensor(2.0)
        out = FusionGate(beta=2.0, eps=0.25)(self.v, alpha)
        scaled = 2.0 * torch.sigmoid(alpha * self.v)
        kept = scaled > 0.25
        assert torch.all(out.pi[~kept] == 0.0)  # exactly 0, not small, not -1
        assert torch.allclose(out.pi[kept], scaled[kept])
        assert torch.equal(out.keep, kept.float())

    def test_scaling_never_zero_and_bounded_by_beta(self):
        out = ScalingGate(beta=2.0)(self.v, torch.tensor(5.0))
        assert torch.all(out.pi > 0) and torch.all(out.pi < 2.0)
        assert torch.equal(out.keep, torch.ones_like(self.v))

    def test_fusion_eps_is_compared_with_beta_sigma_so_it_may_exceed_one(self):
        # eps is a threshold on beta*sigma in (0, beta): with beta=2, eps=1.5 prunes every
        # neuron whose sigma is below 0.75
        out = FusionGate(beta=2.0, eps=1.5)(self.v, torch.tensor(1.0))
        kept = torch.sigmoid(self.v) > 0.75
        assert torch.equal(out.keep, kept.float()) and 0 < kept.float().mean() < 1

    @pytest.mark.parametrize("gate", [BinarizationGate(0.25), FusionGate(2.0, 0.25)])
    def test_straight_through_gradient_is_nonzero(self, gate):
        v = torch.linspace(-3, 3, 20, requires_grad=True)
        out = gate(v, torch.tensor(1.0))
        (out.pi.sum() + out.keep.sum()).backward()
        assert torch.all(v.grad != 0)  # step() alone has zero gradient everywhere

    @pytest.mark.parametrize("gate", [BinarizationGate(0.25), FusionGate(2.0, 0.25)])
    def test_without_autograd_the_forward_is_the_same_hard_value(self, gate):
        v = torch.linspace(-3, 3, 20, requires_grad=True)
        trained = gate(v, torch.tensor(1.3))
        with torch.no_grad():
            served = gate(v, torch.tensor(1.3))
        assert torch.allclose(served.pi, trained.pi.detach(), rtol=0, atol=1e-6)
        assert torch.equal(served.keep, (served.pi != 0).float())  # exactly 0 or 1

    @pytest.mark.parametrize(
        "make,match",
        [
            (lambda: ScalingGate(beta=0.5), "beta=0.5 must be >= 1"),
            (lambda: FusionGate(beta=0.9), "beta=0.9"),
            (lambda: BinarizationGate(eps=1.5), r"pruner.gate.eps=1.5 must be in \(0, 1\)"),
            (lambda: FusionGate(beta=2.0, eps=2.0), r"pruner.gate.eps=2.0 .*beta=2.0"),
            (lambda: FusionGate(beta=3.0, eps=0.0), r"pruner.gate.eps=0.0 .*\(0, beta=3.0\)"),
            (lambda: PrunerSpec(gate=FusionGate(), inputs="both"), "pruner.inputs='both'"),
        ],
    )
    def test_bad_values_name_the_key(self, make, match):
        with pytest.raises(ConfigError, match=match):
            make()


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_domain_pruners_per_code_equal_per_row(tiny_data, stop_gradient):
    """inputs=domain runs its pruners once per domain code and gathers: the same outputs,
    masks and gradients as running them on every row."""
    model = make_model(tiny_data, FusionGate(), inputs="domain", stop_gradient=stop_gradient)
    model.set_alpha(2.0)
    split = tiny_data.splits["train"]
    cat, dense = split.cat[:300], split.dense[:300]
    results = []
    for per_code in (True, False):
        model.per_code = per_code
        model.zero_grad()
        out = model(cat, dense)
        (out.logits.sum() + sum(k.sum() for k in out.keep)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (fast, g_fast), (slow, g_slow) = results
    assert torch.allclose(fast.logits, slow.logits, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(fast.keep, slow.keep))
    assert g_fast.keys() == g_slow.keys() and len(g_fast) > 0
    for name in g_fast:
        assert torch.allclose(g_fast[name], g_slow[name], atol=1e-5), name


class TestModel:
    def test_shapes_and_masks(self, tiny_data):
        model = make_model(tiny_data, FusionGate(), mask_input=True)
        split = tiny_data.splits["train"]
        out = model(split.cat[:7], split.dense[:7])
        assert out.logits.shape == (7,)
        assert model.positions == [0, 1, 2]
        assert [k.shape for k in out.keep] == [(7, model.widths[0]), (7, 32), (7, 16)]
        assert model.widths[0] == (len(tiny_data.vocab_sizes) + len(tiny_data.schema.dense)) * 8

    def test_dense_model_has_no_masks(self, tiny_data):
        model = make_model(tiny_data, None)
        out = model(tiny_data.splits["val"].cat[:5], tiny_data.splits["val"].dense[:5])
        assert out.keep == [] and len(model.pruners) == 0

    def test_domain_input_masks_depend_on_domain_only(self, tiny_data):
        model = make_model(tiny_data, FusionGate(), inputs="domain")
        model.set_alpha(5.0)
        with torch.no_grad():
            for p in model.pruners.values():
                p.weight.normal_(0, 3.0)
        split = tiny_data.splits["val"]
        out = model(split.cat[:2000], split.dense[:2000])
        for k in range(tiny_data.n_domains):
            rows = out.pi[0][split.domain[:2000] == k]
            assert torch.all(rows == rows[0])

    def test_binarization_pruner_receives_gradient(self, tiny_data):
        model = make_model(tiny_data, BinarizationGate(0.25))
        model.set_alpha(1.0)
        split = tiny_data.splits["train"]
        out = model(split.cat[:256], split.dense[:256])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, split.label[:256])
        loss.backward()
        for p in model.pruners.values():
            assert p.weight.grad is not None and p.weight.grad.abs().sum() > 0

    def test_stop_gradient_blocks_pruner_path_to_domain_embedding(self, tiny_data):
        split = tiny_data.splits["train"]
        grads = {}
        for stop in (False, True):
            model = make_model(tiny_data, FusionGate(), inputs="domain", stop_gradient=stop)
            model.set_alpha(1.0)
            out = model(split.cat[:64], split.dense[:64])
            torch.stack(
                [k.sum() for k in out.keep]
            ).sum().backward()  # depends on e_d only via pruners
            grads[stop] = model.embedding.table.weight.grad
        assert grads[False] is not None and grads[False].abs().sum() > 0
        assert grads[True] is None or grads[True].abs().sum() == 0

    def test_alpha_is_saved_restored_and_not_advanced_by_evaluation(self, tiny_data):
        model = make_model(
            tiny_data, FusionGate(), alpha_start=0.1, alpha_end=5.0, alpha_anneal=0.5
        )
        settings = TrainSettings(epochs=2, batch_size=1024, progress=False)
        fit(model, tiny_data, settings, SparsityRegularizer(), ConstantBand(0.15, 0.25))
        alpha = float(model.alpha)
        assert alpha == pytest.approx(5.0, abs=1e-3)  # annealed by training steps
        for _ in range(3):
            evaluate(model, tiny_data, "val")
        assert float(model.alpha) == alpha
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        restored = make_model(tiny_data, FusionGate())
        assert float(restored.alpha) == pytest.approx(0.1)
        restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
        assert float(restored.alpha) == alpha

    def test_alpha_schedule_is_a_pure_function_of_progress(self):
        spec = PrunerSpec(gate=FusionGate(), alpha_start=0.1, alpha_end=5.0, alpha_anneal=0.8)
        assert spec.alpha_at(0.0) == pytest.approx(0.1)
        assert spec.alpha_at(0.4) == pytest.approx(0.1 + 0.5 * 4.9)
        assert spec.alpha_at(0.8) == spec.alpha_at(1.0) == pytest.approx(5.0)

    @pytest.mark.slow
    def test_training_is_deterministic(self, tiny_data):
        results = []
        for _ in range(2):
            model = make_model(tiny_data, FusionGate())
            fit(
                model,
                tiny_data,
                TrainSettings(epochs=1, progress=False, seed=3),
                SparsityRegularizer(),
                ConstantBand(0.15, 0.25),
            )
            results.append(evaluate(model, tiny_data, "val").metrics.mean_domain_auc)
        assert results[0] == results[1]
