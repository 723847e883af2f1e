"""The model zoo (models/base.py interface): mlp, dcnv2, shared_bottom, mmoe, ple train on the
synthetic data and the real samples; their analytic FLOPs equal FlopCounterMode on the served
network of each domain; a domain's predictions ignore other domains' private parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import Logits, reference_flops
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.run.naming import method_name
from adasparse_lab.run.outputs import write_outputs
from adasparse_lab.run.pipeline import train_and_evaluate

# Each model small: (model=..., its size overrides, pruner)
SMALL = {
    "mlp": ["model=mlp", "model.hidden_dims=[16,8]"],
    "dcnv2": ["model=dcnv2", "model.hidden_dims=[16,8]", "model.cross_layers=2"],
    "dcnv2_parallel": [
        "model=dcnv2",
        "model.hidden_dims=[16,8]",
        "model.cross_layers=2",
        "model.structure=parallel",
    ],
    "shared_bottom": ["model=shared_bottom", "model.bottom_dims=[16]", "model.tower_dims=[8]"],
    "mmoe": ["model=mmoe", "model.n_experts=3", "model.expert_dims=[16]", "model.tower_dims=[8]"],
    "ple": ["model=ple", "model.expert_dims=[16,8]", "model.tower_dims=[]"],
    "star": ["model=star", "model.hidden_dims=[16,8]", "model.aux_hidden_dims=[8]"],
    "pepnet": ["model=pepnet", "model.hidden_dims=[16,8]", "model.gate_hidden=8"],
    "apg": ["model=apg", "model.hidden_dims=[16,8]", "model.rank=4"],
}
DENSE = ["pruner=none"]
DOMAIN_PRUNER = ["pruner=fusion", "pruner.inputs=domain", "schedule=constant"]
BASE = [
    "tracking=none",
    "latency.enabled=false",
    "model.embedding_dim=4",
    "train.epochs=1",
    "train.batch_size=256",
    "train.progress=false",
    "synthetic.n_rows=3000",
    "synthetic.n_users=200",
    "synthetic.n_items=100",
]
DATA = {
    "synthetic": [],
    "douban": ["data=douban"],
    "taobao": ["data=taobao"],  # the raw three-file layout (hand-written fixture)
    "taobao_fuxictr": ["data=taobao_fuxictr"],
    "aliccp_processed": ["data=aliccp_processed"],
    "aliexpress": ["data=aliexpress", "data.source.countries=[XA,XB]"],
}
REAL_SAMPLES = ["douban", "taobao_fuxictr", "aliccp_processed", "aliexpress"]


def cfg_for(make_cfg, name, pruner=DENSE, data="synthetic", extra=()):
    return make_cfg(*BASE, *SMALL[name], *pruner, *DATA[data], *extra, tiny=False)


def built(make_cfg, data, name, pruner=DENSE):
    cfg = cfg_for(make_cfg, name, pruner)
    return build_model(cfg.model, data, build_components(cfg).pruner, cfg.flops_reference)


def check_run(result, tmp_path, cfg):
    m, model = result.metrics, result.model
    assert np.isfinite(m["test/auc"]) and 0.0 <= m["test/auc"] <= 1.0
    every = sum(p.numel() for p in model.parameters())
    assert m["params"] == every > m["params/network"] > 0
    ref = reference_flops(model.embedding.output_dim(), cfg.flops_reference)
    assert m["test/flops/dense"] == ref
    table = result.domains
    assert table["test_auc"].null_count() < table.height
    for k, row in enumerate(table.iter_rows(named=True)):
        if not model.positions:  # no masks: the per-domain FLOPs are the analytic constant
            code = torch.tensor([k + 1])
            served = float(model.flops(torch.zeros(1, 0), code).total[0])
            assert row["flops"] == pytest.approx(served)
        assert row["flops_ratio"] == pytest.approx(row["flops"] / ref)
        assert row["params"] == model.domain_params(k + 1) > 0
    write_outputs(tmp_path / "run", cfg, result)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["metrics"]["params"] == every
    assert [d["params"] for d in saved["domains"]] == table["params"].to_list()


@pytest.mark.parametrize("name", list(SMALL))
def test_every_model_trains_and_reports_auc_flops_params(make_cfg, tmp_path, name):
    cfg = cfg_for(make_cfg, name)
    check_run(train_and_evaluate(cfg), tmp_path, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("data", [*REAL_SAMPLES, "taobao"])
@pytest.mark.parametrize("name", list(SMALL))
def test_every_model_trains_on_the_real_samples(make_cfg, tmp_path, name, data):
    cfg = cfg_for(make_cfg, name, data=data)
    check_run(train_and_evaluate(cfg), tmp_path, cfg)


@pytest.mark.parametrize("name", ["mlp", "dcnv2", "dcnv2_parallel"])
def test_adasparse_pruners_work_on_mlp_and_dcnv2(make_cfg, tmp_path, name):
    cfg = cfg_for(make_cfg, name, ["pruner=fusion", "schedule=constant"])
    result = train_and_evaluate(cfg)
    assert result.model.positions and result.metrics["test/sparsity/overall"] >= 0.0
    assert result.metrics["test/flops/mean"] > 0.0
    check_run(result, tmp_path, cfg)


def served_flops(model, data, code):
    """(FlopCounterMode count per row of the served net, analytic matmul FLOPs per row)."""
    split = data.splits["val"]
    rows = torch.nonzero(split.domain == code - 1).flatten()[:64]
    cat, dense = split.cat[rows], split.dense[rows]
    model.eval()
    with torch.no_grad():
        out = model(cat, dense)
        net = model.served(code)
        with FlopCounterMode(display=False) as counter:
            served = net(cat, dense)
    torch.testing.assert_close(served, out.logits, rtol=1e-4, atol=1e-5)
    kept = torch.stack([k.sum(1) for k in out.keep], 1) if out.keep else torch.zeros(len(rows), 0)
    analytic = model.flops(kept, model.domain_code(cat))
    return counter.get_total_flops() / len(rows), analytic


@pytest.mark.parametrize(
    "name, pruner",
    [(n, DENSE) for n in SMALL] + [("dcnv2", DOMAIN_PRUNER), ("dcnv2_parallel", DOMAIN_PRUNER)],
)
def test_flops_equal_flop_counter_on_the_served_network(make_cfg, tiny_data, name, pruner):
    torch.manual_seed(0)
    model = built(make_cfg, tiny_data, name, pruner)
    if model.positions:  # a static per-domain structure that really prunes something
        with torch.no_grad():
            for p in model.pruners.values():
                p.bias.normal_(0.0, 2.0)
        model.set_alpha(5.0)
    for code in range(1, tiny_data.n_domains + 1):
        counted, analytic = served_flops(model, tiny_data, code)
        assert analytic.pruner.eq(0).all()  # nothing runs online on a static structure
        assert counted == pytest.approx(float(analytic.matmul.mean()))
        if model.positions:
            assert not isinstance(model.served(code), Logits)  # compacted


@pytest.mark.parametrize("name", list(SMALL))
def test_a_domain_ignores_other_domains_private_parameters(make_cfg, tiny_data, name):
    torch.manual_seed(0)
    model = built(make_cfg, tiny_data, name).eval()
    split = tiny_data.splits["val"]
    mine, other = 1, 2  # domain-field codes of the first two domains
    rows = torch.nonzero(split.domain == mine - 1).flatten()[:128]
    cat, dense = split.cat[rows], split.dense[rows]
    with torch.no_grad():
        before = model(cat, dense).logits
        for p, idx in model.private_parameters(other):
            p[slice(None) if idx is None else idx] += torch.randn_like(
                p[idx] if idx is not None else p
            )
        assert torch.equal(model(cat, dense).logits, before)
        for p, idx in model.private_parameters(mine):  # and its own ones do matter
            p[slice(None) if idx is None else idx] += torch.randn_like(
                p[idx] if idx is not None else p
            )
        assert not torch.allclose(model(cat, dense).logits, before)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model=mmoe", "pruner=fusion"], "pruner"),
        (["model=ple", "pruner=magnitude"], "pruner"),
        (["model=shared_bottom", "pruner=fusion"], "pruner"),
        (["model=mmoe", "pruner=none", "model.n_experts=0"], "model.n_experts"),
        (["model=ple", "pruner=none", "model.n_specific=0"], "model.n_specific"),
        (["model=shared_bottom", "pruner=none", "model.bottom_dims=[]"], "model.bottom_dims"),
        (["model=dcnv2", "model.structure=side"], "model.structure"),
        (["model=dcnv2", "model.cross_layers=0"], "model.cross_layers"),
        (["model=mlp", "flops_reference=[]"], "flops_reference"),
    ],
)
def test_bad_model_config_names_the_key(make_cfg, tiny_data, overrides, key):
    cfg = make_cfg(*BASE, *overrides, tiny=False)
    with pytest.raises(ConfigError, match=key):
        build_model(cfg.model, tiny_data, build_components(cfg).pruner, cfg.flops_reference)


def test_method_names_carry_the_model(make_cfg):
    def name(*o):
        cfg = make_cfg("tracking=none", *o, tiny=False)
        return method_name(cfg.pruner, cfg.model)

    assert name("model=adasparse", "pruner=none") == name("model=mlp", "pruner=none") == "dense"
    assert name("model=mlp", "pruner=fusion") == "adasparse-fusion"
    assert name("model=dcnv2", "pruner=fusion") == "dcnv2+adasparse-fusion"
    assert name("model=dcnv2", "pruner=none") == "dcnv2"
    assert name("model=mmoe", "pruner=none") == "mmoe"


@pytest.mark.slow
def test_models_study_builds_every_choice_and_names_it_by_model(make_cfg, tiny_data):
    """+study=models: each choice composes, builds its model and names its method by model
    (star, pepnet, apg come from their own files: skipped until they exist)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    base = make_cfg("+study=models", "tracking=none", tiny=False)
    choices = base.study.space.method.overrides
    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    names = {}
    for choice, overrides in choices.items():
        model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))
        if not (conf / f"{model}.yaml").exists():
            continue
        cfg = make_cfg("+study=models", "tracking=none", *overrides, tiny=False)
        net = build_model(cfg.model, tiny_data, build_components(cfg).pruner, cfg.flops_reference)
        assert net.reference_dims() == tuple(OmegaConf.to_container(cfg.flops_reference))
        names[choice] = method_name(cfg.pruner, cfg.model)
    assert names["mlp"] == names["mlp_narrow"] == "dense"
    assert names["mmoe_e2"] == names["mmoe_e4"] == "mmoe"
    assert names["dcnv2_fusion_t15"] == "dcnv2+adasparse-fusion"
    assert names["mlp_fusion_t40"] == "adasparse-fusion"
    zoo = {p.stem for p in conf.glob("*.yaml") if not p.stem.startswith("_")} - {"adasparse"}
    used = {o.split("=", 1)[1] for ov in choices.values() for o in ov if o.startswith("model=")}
    assert zoo <= used  # every model= of the zoo is on the study's front


@pytest.mark.slow
def test_models_bench_times_fit_and_bare_per_model():
    from adasparse_lab.bench.models import format_models, run_models_bench
    from adasparse_lab.bench.throughput import TrainBenchConfig

    cfg = TrainBenchConfig(rows=1024, warmup_rows=512, repeats=2)
    res = run_models_bench(cfg, only=("mmoe", "dcnv2+fusion"))
    assert list(res.fit) == list(res.bare) == ["dcnv2+fusion", "mmoe"]
    for name in res.fit:
        assert len(res.fit[name]) == len(res.bare[name]) == 2
        assert res.ratio(name) == max(res.fit[name]) / max(res.bare[name]) > 0
    assert "mmoe" in format_models(res, 1)


@pytest.mark.slow  # MLflow's sqlite store: ~15 s
def test_a_zoo_run_logs_auc_flops_and_params_to_mlflow(make_cfg, tmp_path, capsys):
    import mlflow

    from adasparse_lab.train import run

    base = [o for o in BASE if o != "tracking=none"]
    cfg = make_cfg(*base, *SMALL["mmoe"], *DENSE, tiny=False)
    metrics = run(cfg, tmp_path / "out")
    client = mlflow.tracking.MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    (logged,) = client.search_runs([exp.experiment_id])
    assert logged.info.run_name == "synthetic-mmoe-none"
    for key in ("test/auc", "test/flops/mean", "test/flops/ratio", "params", "params/network"):
        assert logged.data.metrics[key] == pytest.approx(metrics[key])
    per_domain = [k for k in logged.data.metrics if k.startswith("params/d")]
    assert per_domain and all(logged.data.metrics[k] > 0 for k in per_domain)
    printed = capsys.readouterr().out
    assert "params" in printed and f"params {metrics['params']:,.0f}" in printed
