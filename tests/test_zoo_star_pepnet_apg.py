"""The zoo's STAR, PEPNet and APG models, built from their conf/model/*.yaml on tiny synthetic
data: shapes, gradients, training, FLOPs against FlopCounterMode on the served network, the
routing of per-domain parameters, STAR's folding, and config errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import auc
from adasparse_lab.models.flops import dense_flops
from adasparse_lab.run.build import build_components, build_model
from tests.conftest import compose_config

MODELS = {
    "star": ["model=star", "model.aux_hidden_dims=[8]"],
    "pepnet": ["model=pepnet", "model.gate_hidden=8"],
    "apg": ["model=apg", "model.rank=4"],
    "apg_sample": ["model=apg", "model.rank=4", "model.condition=sample"],
}
BATCH = 256


def config(tmp_path, name: str, *extra: str):
    return compose_config([*MODELS[name], "pruner=none", "tracking=none", *extra], tmp_path)


def build(tmp_path, data, name: str, *extra: str):
    torch.manual_seed(0)
    return build_model(config(tmp_path, name, *extra).model, data, None)


def train(model, data, steps: int, lr: float = 1e-2) -> list[float]:
    """Adam on BCE over shuffled training batches; the loss of each step."""
    split = data.splits["train"]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(split), (BATCH,), generator=gen)
        logits = model(split.cat[idx], split.dense[idx]).logits
        loss = F.binary_cross_entropy_with_logits(logits, split.label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """name -> a model trained for 15 steps (so STAR's per-domain weights and statistics and
    every generator and gate have moved from their initial values), in eval mode."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model = build(tmp_path_factory.mktemp(name), tiny_data, name)
            train(model, tiny_data, 15)
            cache[name] = model.eval()
        return cache[name]

    return get


def domain_rows(data, k: int, n: int = 24, split: str = "val"):
    s = data.splits[split]
    idx = torch.nonzero(s.domain == k).flatten()[:n]
    return s.cat[idx], s.dense[idx]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_and_gradients_reach_every_parameter(tmp_path, tiny_data, name):
    model = build(tmp_path, tiny_data, name)
    split = tiny_data.splits["train"]
    cat, dense = split.cat[:BATCH], split.dense[:BATCH]
    out = model(cat, dense)
    assert out.logits.shape == (BATCH,) and out.keep == [] and out.pi == []
    assert model.positions == [] and not model.learns_masks and not model.masks_zero
    F.binary_cross_entropy_with_logits(out.logits, split.label[:BATCH]).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    flops = model.flops(torch.zeros(BATCH, 0), model.domain_code(cat))
    for part in (flops.matmul, flops.bias, flops.pruner):
        assert part.shape == (BATCH,) and part.dtype == torch.float64


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_ranks_validation_rows(tmp_path, tiny_data, name):
    model = build(tmp_path, tiny_data, name)
    losses = train(model, tiny_data, 150)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.02
    val = tiny_data.splits["val"]
    with torch.no_grad():
        scores = model.eval()(val.cat, val.dense).logits
    assert auc(val.label.numpy(), scores.numpy()) > 0.65


def generator_biases(model) -> float:
    """APG per-row generators: K^2 bias adds per layer that FlopCounterMode does not count."""
    if getattr(model, "condition", None) != "sample":
        return 0.0
    return len(model.layers) * model.rank**2


@pytest.mark.parametrize("name", MODELS)
def test_flops_equal_flop_counter_on_each_domains_served_network(trained, tiny_data, name):
    model = trained(name)
    for k in range(tiny_data.n_domains):
        code = k + 1
        cat, dense = domain_rows(tiny_data, k)
        with torch.no_grad():
            expected = model(cat, dense).logits
            served = model.served(code)
            with FlopCounterMode(display=False) as counter:
                logits = served(cat, dense)
        flops = model.flops(torch.zeros(len(cat), 0), model.domain_code(cat))
        # FlopCounterMode counts 2 per multiply-add of mm/addmm/bmm; bias adds, element-wise
        # products and the generator's biases are not matmuls.
        analytic = flops.matmul + flops.pruner - generator_biases(model)
        assert counter.get_total_flops() / len(cat) == pytest.approx(float(analytic[0]))
        assert (analytic == analytic[0]).all()
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_star_serves_one_mlp_plus_the_auxiliary_network(trained, tiny_data):
    model = trained("star")
    cat, dense = domain_rows(tiny_data, 0)
    flops = model.flops(torch.zeros(len(cat), 0), model.domain_code(cat))
    h0, hidden = model.embedding.output_dim(), [32, 16]  # conftest.TINY: model.hidden_dims
    # Two MLPs (matmul + bias each) and one add of their logits; the partitioned norm is folded.
    expected = dense_flops([h0, *hidden]) + dense_flops([h0, 8]) + 1
    assert float(flops.total[0]) == expected


def test_star_folded_network_equals_the_model_after_training(trained, tiny_data):
    model = trained("star")
    # Training moved what the folding must carry: per-domain weights and norm statistics.
    assert not torch.allclose(model.layers[0].domain_weight, torch.ones(1))
    assert not torch.allclose(model.norm.running_mean, torch.zeros(1))
    for k in (0, tiny_data.n_domains - 1):
        cat, dense = domain_rows(tiny_data, k, split="test")
        with torch.no_grad():
            torch.testing.assert_close(
                model.served(k + 1)(cat, dense), model(cat, dense).logits, atol=1e-5, rtol=1e-5
            )


@torch.no_grad()
def perturbed_logits(model, private, cat, dense) -> torch.Tensor:
    """Logits after adding noise to the given (parameter, index) slices; restores them."""
    saved = [p.detach().clone() for p, _ in private]
    gen = torch.Generator().manual_seed(1)
    for p, index in private:
        view = p if index is None else p[index]
        view.add_(torch.randn(view.shape, generator=gen))
    out = model(cat, dense).logits
    for (p, _), old in zip(private, saved):
        p.copy_(old)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_private_parameters_route_only_their_domain(trained, tiny_data, name):
    model = trained(name)
    own, other = 1, 2  # domain codes (domain indices 0 and 1)
    cat, dense = domain_rows(tiny_data, own - 1)
    with torch.no_grad():
        base = model(cat, dense).logits
    assert model.private_parameters(other)
    untouched = perturbed_logits(model, model.private_parameters(other), cat, dense)
    assert torch.equal(untouched, base)
    moved = perturbed_logits(model, model.private_parameters(own), cat, dense)
    assert (moved - base).abs().max() > 1e-3
    with torch.no_grad():
        assert torch.equal(model(cat, dense).logits, base)  # restored


@pytest.mark.parametrize("name", ["star", "pepnet", "apg"])
def test_models_without_masks_refuse_a_pruner(tmp_path, tiny_data, name):
    cfg = config(tmp_path, name, "pruner=fusion")
    pruner = build_components(cfg).pruner
    assert pruner is not None
    with pytest.raises(ConfigError, match=f"model={name} takes no pruner; use pruner=none"):
        build_model(cfg.model, tiny_data, pruner)


@pytest.mark.parametrize(
    ("name", "override", "key"),
    [
        ("star", "model.hidden_dims=[]", "model.hidden_dims"),
        ("star", "model.aux_hidden_dims=[0]", "model.aux_hidden_dims"),
        ("star", "model.norm_momentum=0", "model.norm_momentum"),
        ("pepnet", "model.hidden_dims=[16,0]", "model.hidden_dims"),
        ("pepnet", "model.context_fields=[1,99]", "model.context_fields"),
        ("pepnet", "model.gate_hidden=0", "model.gate_hidden"),
        ("apg", "model.rank=0", "model.rank"),
        ("apg", "model.condition=user", "model.condition"),
        ("apg", "model.embedding_dim=0", "model.embedding_dim"),
    ],
)
def test_bad_sizes_name_their_key(tmp_path, tiny_data, name, override, key):
    with pytest.raises(ConfigError, match=key):
        build(tmp_path, tiny_data, name, override)


def test_star_partitioned_norm_uses_each_domains_own_batch_statistics(tmp_path, tiny_data):
    """Training mode: a row is normalised with its own domain's rows only, so changing another
    domain's rows in the same batch leaves its logit unchanged (a shared BatchNorm would not)."""
    model = build(tmp_path, tiny_data, "star").train()
    (cat_a, dense_a), (cat_b, dense_b) = domain_rows(tiny_data, 0), domain_rows(tiny_data, 1)
    cat, dense = torch.cat([cat_a, cat_b]), torch.cat([dense_a, dense_b])
    with torch.no_grad():
        base = model(cat, dense).logits
        shifted = model(cat, torch.cat([dense_a, dense_b + 3.0])).logits
    n = len(cat_a)
    torch.testing.assert_close(shifted[:n], base[:n], atol=1e-6, rtol=1e-6)
    assert (shifted[n:] - base[n:]).abs().max() > 1e-3


def test_pepnet_gates_see_the_embedding_through_a_stop_gradient(tmp_path, tiny_data, monkeypatch):
    """d logits / d h^0 is that of the DNN with every gate held at its value: h^0 reaches the
    gates (EPNet: sg(h^0); PPNet: sg(O_ep)) but sends no gradient through them, except the
    context fields' embeddings, which PPNet's prior reads without a stop-gradient."""
    model = build(tmp_path, tiny_data, "pepnet")
    cat, dense = domain_rows(tiny_data, 0, split="train")
    e_d, h0 = (t.detach() for t in model.embedding(cat, dense))
    h0.requires_grad_(True)
    monkeypatch.setattr(model.embedding, "forward", lambda c, d: (e_d, h0))
    gates = []
    for gate in [model.epnet, *model.ppnet]:
        gate.register_forward_hook(lambda _m, _i, out: gates.append(out.detach()))
    (through_model,) = torch.autograd.grad(model(cat, dense).logits.sum(), h0)
    x = gates[0] * h0  # the same network with the gates as constants
    for i, (delta, layer) in enumerate(zip(gates[1:], model.layers)):
        x = layer(delta * x)
        x = torch.relu(x) if i < len(model.layers) - 1 else x
    (held,) = torch.autograd.grad(x.sum(), h0)
    ctx = torch.zeros(h0.shape[1], dtype=torch.bool)
    ctx[model.ctx_index] = True
    torch.testing.assert_close(through_model[:, ~ctx], held[:, ~ctx])
    assert (through_model[:, ctx] - held[:, ctx]).abs().max() > 1e-6
