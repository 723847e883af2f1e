"""model.kernel=fast against model.kernel=reference (today's plain path): the same logits,
gradients and keep masks within float tolerance for every pruner variant, the same metrics
after a short fit; train.autocast=bf16 on CPU; train.device errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from adasparse_lab.errors import ConfigError
from adasparse_lab.models import AdaSparseModel, Fields, PrunerSpec
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate
from adasparse_lab.run.build import data_fields
from adasparse_lab.run.fit import TrainSettings, fit
from adasparse_lab.sparsity import ConstantBand, SparsityRegularizer

GATES = {"fusion": FusionGate, "binarization": BinarizationGate, "scaling": ScalingGate}
VARIANTS = {  # name -> (gate, PrunerSpec keywords, domain fields beyond the domain column)
    "fusion": ("fusion", {}, 0),
    "binarization": ("binarization", {}, 0),
    "scaling": ("scaling", {}, 0),
    "fusion-domain": ("fusion", {"inputs": "domain"}, 0),
    "binarization-domain": ("binarization", {"inputs": "domain"}, 0),
    "fusion-lowrank": ("fusion", {"rank": 4}, 0),
    "fusion-lowrank-domain": ("fusion", {"rank": 4, "inputs": "domain"}, 0),
    "fusion-mask-input": ("fusion", {"mask_input": True}, 0),
    "fusion-stop-gradient": ("fusion", {"stop_gradient": True}, 0),
    "scaling-mask-input-stop-gradient": ("scaling", {"mask_input": True, "stop_gradient": True}, 0),
    "fusion-two-domain-fields": ("fusion", {}, 1),  # no per-code terms: [h ; e_d] path
    "binarization-two-domain-fields-domain": ("binarization", {"inputs": "domain"}, 1),
}


def make_pair(data, variant: str) -> tuple[AdaSparseModel, AdaSparseModel]:
    """(reference, fast) models with the same weights."""
    gate, kwargs, extra = VARIANTS[variant]
    fields = data.domain_feature_index()
    others = [i for i in range(len(data.vocab_sizes)) if i not in fields]
    torch.manual_seed(0)
    reference = AdaSparseModel(
        Fields(data.vocab_sizes, len(data.schema.dense), fields + others[:extra]),
        embedding_dim=8,
        hidden_dims=(32, 16),
        pruner=PrunerSpec(gate=GATES[gate](), **kwargs),
        kernel="reference",
    )
    fast = copy.deepcopy(reference)
    fast.kernel = "fast"
    return reference, fast


def forward_backward(model: AdaSparseModel, data, rows: int = 256):
    """Outputs and parameter gradients of BCE + the sparsity penalty on ``rows`` train rows."""
    split = data.splits["train"]
    model.set_alpha(2.0)
    model.zero_grad(set_to_none=True)
    out = model(split.cat[:rows], split.dense[:rows])
    loss = F.binary_cross_entropy_with_logits(out.logits, split.label[:rows])
    penalty = SparsityRegularizer.penalty(out.keep, (0.5, 0.6), 3.0)  # outside: a gradient
    (loss + penalty).backward()
    return out, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_kernel_equals_reference(tiny_data, variant):
    reference, fast = make_pair(tiny_data, variant)
    (out_r, grads_r), (out_f, grads_f) = (forward_backward(m, tiny_data) for m in (reference, fast))
    torch.testing.assert_close(out_f.logits, out_r.logits, rtol=1e-5, atol=1e-6)
    assert len(out_f.keep) == len(out_r.keep) == len(reference.positions) > 0
    for keep_f, keep_r, pi_f, pi_r in zip(out_f.keep, out_r.keep, out_f.pi, out_r.pi):
        torch.testing.assert_close(keep_f, keep_r, rtol=0, atol=1e-6)  # the same neurons kept
        torch.testing.assert_close(pi_f, pi_r, rtol=1e-5, atol=1e-6)
    assert grads_f.keys() == grads_r.keys()
    assert any(n.startswith("pruners.") for n in grads_r)  # the pruners are trained
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["fusion", "fusion-domain", "binarization"])
def test_fast_kernel_equals_reference_without_autograd(tiny_data, variant):
    """Evaluation and serving run the model under no_grad: the same values there too."""
    reference, fast = make_pair(tiny_data, variant)
    split = tiny_data.splits["val"]
    with torch.no_grad():
        out_r, out_f = (m.eval()(split.cat[:500], split.dense[:500]) for m in (reference, fast))
    torch.testing.assert_close(out_f.logits, out_r.logits, rtol=1e-5, atol=1e-6)
    for keep_f, keep_r in zip(out_f.keep, out_r.keep):
        assert torch.equal(keep_f, keep_r)


def short_fit(model, data, **train):
    settings = TrainSettings(epochs=3, batch_size=256, progress=False, device="cpu", **train)
    return fit(model, data, settings, SparsityRegularizer(0.01, 10.0, 0.4), ConstantBand(0.1, 0.2))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fusion", "fusion-domain"])
def test_short_fit_gives_the_same_metrics(tiny_data, variant):
    reference, fast = make_pair(tiny_data, variant)
    val_r, val_f = (short_fit(m, tiny_data).history[-1].val for m in (reference, fast))
    assert val_r["val/sparsity/overall"] > 0.05  # neurons were pruned: the gates' zeros count
    assert val_f.keys() == val_r.keys()
    for key in val_r:
        assert val_f[key] == pytest.approx(val_r[key], rel=1e-3, abs=1e-4, nan_ok=True), key


def test_unknown_kernel_names_the_key(tiny_data):
    with pytest.raises(ConfigError, match="model.kernel"):
        AdaSparseModel(data_fields(tiny_data), kernel="jit")


@pytest.mark.slow
def test_bf16_autocast_trains_close_to_fp32(tiny_data):
    """train.autocast=bf16 on CPU: the forward runs in bfloat16 and the model learns about as
    well as in fp32 (mean per-domain AUC within 0.02 on the tiny data)."""
    reference, _ = make_pair(tiny_data, "fusion")
    fp32, bf16 = reference, copy.deepcopy(reference)
    auc = {}
    for name, model, mode in (("fp32", fp32, None), ("bf16", bf16, "bf16")):
        model.kernel = "fast"
        auc[name] = short_fit(model, tiny_data, autocast=mode).history[-1].val
    assert auc["fp32"]["val/mean_domain_auc"] > 0.55  # it learned something
    assert auc["bf16"]["val/mean_domain_auc"] == pytest.approx(
        auc["fp32"]["val/mean_domain_auc"], abs=0.02
    )


def test_autocast_forward_is_bf16_on_cpu(tiny_data):
    _, fast = make_pair(tiny_data, "fusion")
    split = tiny_data.splits["train"]
    with TrainSettings(autocast="bf16", device="cpu").autocast_context(torch.device("cpu")):
        out = fast(split.cat[:64], split.dense[:64])
    assert out.logits.dtype == torch.bfloat16
    assert all(
        k.dtype == torch.bfloat16 and set(k.unique().tolist()) <= {0.0, 1.0} for k in out.keep
    )


@pytest.mark.parametrize(
    "variant", ["fusion-mask-input", "fusion-lowrank", "binarization", "scaling", "fusion-domain"]
)
def test_bf16_autocast_gradients_follow_fp32(tiny_data, variant):
    """Under bf16 autocast the fast kernel's gradients point where fp32's do (cosine > 0.95
    per parameter; bf16 keeps ~3 significant digits) and land in the parameters' fp32."""
    reference, fast = make_pair(tiny_data, variant)
    _, grads_fp32 = forward_backward(reference, tiny_data)
    with TrainSettings(autocast="bf16", device="cpu").autocast_context(torch.device("cpu")):
        _, grads_bf16 = forward_backward(fast, tiny_data)
    assert grads_bf16.keys() == grads_fp32.keys()
    for name, g in grads_bf16.items():
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        cos = F.cosine_similarity(g.flatten(), grads_fp32[name].flatten(), dim=0)
        assert cos > 0.95 or grads_fp32[name].abs().max() < 1e-6, (name, float(cos))


def test_bad_autocast_names_the_key():
    with pytest.raises(ConfigError, match="train.autocast"):
        TrainSettings(autocast="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_train_device():
    with pytest.raises(ConfigError, match="train.device"):
        TrainSettings(device="cuda")
