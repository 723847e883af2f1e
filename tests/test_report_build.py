"""The report built from the real tiny study (conftest.real_study, run by the driver): every
section present, plotly.js inlined once,
the size in check; the command line (default storage, journal storage, unknown study, two
studies overlaid); static export skipped with a clear message when kaleido is missing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import plotly.graph_objects as go
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend
from plotly.offline import get_plotlyjs

from adasparse_lab.report.__main__ import main
from adasparse_lab.report.build import build, export_static, make_sections
from adasparse_lab.report.html import Block, Section, StructureView, render_page
from adasparse_lab.results.collect import ReportData, StudyInfo, collect
from adasparse_lab.results.fronts import mark_front

SECTIONS = [
    "summary",
    "verdicts",  # the real study's methods (pruner forms) against the dense reference
    "pareto",
    "domains",
    "structure",
    "gain",
    "band",
    "search",
    "trials",
    "context",
]


def front_numbers(real_study) -> list[int]:
    """The study's Pareto front as Optuna sees it (feasible, non-dominated COMPLETE trials)."""
    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    return sorted(t.number for t in study.best_trials)


@pytest.fixture(scope="module")
def built(real_study, tmp_path_factory):
    return build([real_study.name], [real_study.storage], tmp_path_factory.mktemp("reports"))


@pytest.mark.slow
def test_report_has_every_section(built, real_study):
    page = built.path.read_text()
    assert built.path.name == "report.html" and built.path.parent.name == real_study.name
    assert re.findall(r'<section id="([a-z]+)"', page) == SECTIONS
    # plotly.js inlined exactly once, no CDN; the page is mostly that library.
    assert page.count(get_plotlyjs()[:300]) == 1 and "<script src=" not in page
    assert built.bytes < 6_000_000 and built.bytes == built.path.stat().st_size
    # Figures: pareto, per-domain, 3 per structure view, gain, band, 7 diagnostics (search
    # efficiency among them).
    n_views = collect([real_study.name], [real_study.storage]).keep["number"].n_unique()
    assert n_views == len(front_numbers(real_study)) > 1
    assert built.figures == 1 + 1 + 3 * n_views + 1 + 1 + 7
    assert f'data-figures-expected="{built.figures}"' in page
    assert page.count('class="structure-view"') == n_views and page.count("<option ") == n_views
    assert "Plotly.Plots.resize" in page


def test_report_shows_stored_values(built, real_study):
    page = built.path.read_text()
    data = collect([real_study.name], [real_study.storage])
    done = data.trials.filter(pl.col("state") == "COMPLETE")
    for run_id in done["run_id"].to_list():
        assert f"run {run_id}" in page  # hover of each trial names its MLflow run
    table = page[page.index('<section id="trials"') : page.index('<section id="context"')]
    assert table.count("<tr") == 1 + data.trials.height
    assert table.count('class="failed"') == 1 and "RuntimeError: injected failure" in table
    front_rows = re.findall(r'<tr class="front"><td class="num" data-v="(\d+)"', table)
    assert sorted(map(int, front_rows)) == front_numbers(real_study)
    over = data.trials.filter(pl.col("feasible").not_())["number"].to_list()
    marked = re.findall(r'<tr[^>]*><td class="num" data-v="(\d+)">.{0,200}?>infeasible<', table)
    assert over and sorted(map(int, marked)) == over  # over study.flops_budget: said so
    context = page[page.index('<section id="context"') :]
    for d in data.domains["domain"].to_list():
        assert f'data-v="{d}"' in context
    assert "machine: threads" in context and "study config (resolved)" in context
    summary = page[page.index('<section id="summary"') : page.index('<section id="pareto"')]
    assert (
        "4 complete, 1 fail, 1 running" in summary
        and "re-evaluated on test over 1 seed(s)" in summary
    )
    assert "dense model" in summary or "dense val AUC" in summary  # the headline compares with it


def test_report_names_methods_and_toggles_to_measured_latency(built, real_study):
    """The runs measured their latency (latency.enabled): both cost axes are drawn, one trace
    per method (the trials' ``method``, as the driver tagged their runs) on each."""
    data = collect([real_study.name], [real_study.storage])
    done = data.trials.filter(pl.col("state") == "COMPLETE")
    methods = {"adasparse-fusion", "adasparse-fusion-domain", "magnitude"}
    assert set(done["method"]) == methods
    assert done["latency_ratio"].null_count() == 0 and (done["latency_ratio"] > 0).all()
    # The reference's latency: its runs' own val/latency/ratio (dense against dense, timed
    # briefly on a busy machine: a value read back, not a range of timings).
    client = MlflowClient(real_study.mlflow_uri)
    exp = client.get_experiment_by_name(real_study.name)
    refs = client.search_runs([exp.experiment_id], "tags.kind = 'reference'")
    ratios = [r.data.metrics["val/latency/ratio"] for r in refs]
    assert data.reference["latency_ratio"][0] == pytest.approx(np.mean(ratios))
    trial_rows = data.domain_metrics.filter(
        (pl.col("kind") == "trial") & pl.col("number").is_in(done["number"].to_list())
    )
    assert trial_rows.height and trial_rows["latency_ratio"].null_count() == 0
    page = built.path.read_text()
    pareto = page[page.index('<section id="pareto"') : page.index('<section id="domains"')]
    domains = page[page.index('<section id="domains"') : page.index('<section id="structure"')]
    for section in (pareto, domains):
        assert '"label":"analytic FLOPs"' in section and '"label":"measured latency"' in section
        for method in methods:
            assert f'"name":"{method}"' in section  # one trace per method, on both axes
    assert "measured latency ratio" in pareto
    table = page[page.index('<section id="trials"') : page.index('<section id="context"')]
    assert "latency ratio" in table and all(f">{m}<" in table for m in methods)


def test_cli_default_storage(real_study, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([f"study={real_study.name}", f"studies={real_study.root}", f"out={out}"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (out / real_study.name / "report.html").is_file()
    assert re.search(r"size: \d+\.\d\d MB, \d+ figures, built in \d+\.\d s", printed)


def test_cli_errors_name_the_study(real_study, tmp_path, capsys):
    assert main(["study=nope", f"studies={real_study.root}", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "'nope' not found" in err and "studies found under" in err and real_study.name in err
    assert main(["study=tiny", "colour=x"]) == 2
    assert "unknown argument 'colour=x'" in capsys.readouterr().err
    assert main([f"study=x,{real_study.name}", "storage=a"]) == 2
    assert "one storage per study" in capsys.readouterr().err
    assert main(["study=tiny", f"storage={tmp_path}/missing.db"]) == 2
    assert "no such journal file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.db"))  # nothing created by a failed lookup


def test_journal_storage_and_two_studies(real_study, tmp_path):
    journal = tmp_path / "studies" / "copy" / "journal.log"
    journal.parent.mkdir(parents=True)
    optuna.copy_study(
        from_study_name=real_study.name,
        from_storage=real_study.storage,
        to_study_name="copy",
        to_storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))),
    )
    path = build(
        [real_study.name, "copy"],
        [real_study.storage, None],
        tmp_path / "reports",
        studies_dir=tmp_path / "studies",
    ).path
    assert path == tmp_path / "reports" / f"{real_study.name}+copy" / "report.html"
    page = path.read_text()
    for name in (real_study.name, "copy"):
        assert f'"name":"{name}: front"' in page  # both fronts overlaid in one figure
    assert page.count('class="structure-view"') == 2 * len(front_numbers(real_study))


def test_static_export_without_kaleido(built, monkeypatch):
    import adasparse_lab.report.build as build_module

    monkeypatch.setattr(build_module.importlib.util, "find_spec", lambda name: None)
    files, note = export_static([], built.path.parent / "figures", "png")
    assert files == [] and "kaleido is not installed" in note
    with pytest.raises(ValueError, match="png"):
        export_static([], built.path.parent, "jpg")


def fabricated_study(n_trials: int = 50, n_domains: int = 12, widths=(256, 128, 64)) -> ReportData:
    """Tables shaped like a 50-trial study on the default model (no storage, no training):
    half the trials on a concave front, 3 re-evaluation seeds, keep maps for 12 front trials."""
    rng = np.random.default_rng(0)
    flops = rng.uniform(0.2, 1.5, n_trials)
    auc = (
        0.74
        + 0.03 * np.sqrt(flops)
        - np.where(np.arange(n_trials) % 2 == 0, 0.0, rng.uniform(0.001, 0.02, n_trials))
    )
    forms = ["fusion", "binarization", "scaling"]
    run_ids = [f"{i:032x}" for i in range(n_trials)]
    dist = {f"p{j}": optuna.distributions.FloatDistribution(0, 1) for j in range(6)}
    study = optuna.create_study(directions=["maximize", "minimize"])
    params = rng.uniform(0, 1, (n_trials, 6))
    for i in range(n_trials):
        study.add_trial(
            optuna.trial.create_trial(
                values=[auc[i], flops[i]],
                params={f"p{j}": params[i, j] for j in range(6)},
                distributions=dist,
            )
        )
    trials = mark_front(
        pl.DataFrame(
            {
                "study": "big",
                "number": np.arange(n_trials),
                "state": "COMPLETE",
                "duration_s": rng.uniform(30, 300, n_trials),
                "started": "2026-01-01T00:00:00",
                "finished": "2026-01-01T05:00:00",
                "run_id": run_ids,
                "pruner_form": [forms[i % 3] for i in range(n_trials)],
                "pruner_inputs": "domain",
                "band_lo": rng.choice([0.1, 0.2, 0.3], n_trials),
                "band_hi": 0.4,
                "fail_reason": None,
                "auc": auc,
                "flops_ratio": flops,
                "test_auc": auc - 0.002,
                "sparsity": 1 - flops / 1.5,
                **{f"param:p{j}": params[:, j] for j in range(6)},
            }
        )
    )
    domains = [f"d{k:02d}" for k in range(n_domains)]
    metric_rows = [
        {
            "study": "big",
            "kind": "trial",
            "number": i,
            "seed": None,
            "run_id": run_ids[i],
            "domain": d,
            "val_auc": auc[i] + k / 1000,
            "test_auc": auc[i],
            "flops_ratio": flops[i],
            "sparsity": 0.2,
        }
        for i in range(n_trials)
        for k, d in enumerate(domains)
    ]
    metric_rows += [
        {
            "study": "big",
            "kind": "reference",
            "number": None,
            "seed": None,
            "run_id": "ref",
            "domain": d,
            "val_auc": 0.76,
            "test_auc": 0.76,
            "flops_ratio": 1.0,
            "sparsity": 0.0,
        }
        for d in domains
    ]
    front = trials.filter(pl.col("on_front"))["number"].to_list()[:12]
    keep = pl.DataFrame(
        [
            {
                "study": "big",
                "number": i,
                "domain": d,
                "position": p + 1,
                "neuron": n,
                "keep_prob": float(rng.uniform() < 0.7),
            }
            for i in front
            for d in domains
            for p, w in enumerate(widths)
            for n in range(w)
        ]
    )
    layers = keep.group_by("study", "number", "domain", "position").agg(
        sparsity=1 - pl.col("keep_prob").mean()
    )
    reeval = pl.DataFrame(
        {
            "study": "big",
            "number": front,
            "n_seeds": 3,
            "test_auc_mean": auc[front],
            "test_auc_sd": 0.002,
            "flops_ratio_mean": flops[front],
        }
    )
    reeval_domains = pl.DataFrame(
        [
            {
                "study": "big",
                "number": i,
                "domain": d,
                "n_seeds": 3,
                "test_auc_mean": auc[i],
                "test_auc_sd": 0.003,
            }
            for i in front
            for d in domains
        ]
    )
    info = StudyInfo(
        "big",
        "memory",
        study,
        [
            {"name": "val/mean_domain_auc", "direction": "maximize"},
            {"name": "val/flops/ratio", "direction": "minimize"},
        ],
        {
            "config": "".join(f"x{i}: 1\n" for i in range(300)),
            "machine": {"cpu": "x86_64", "threads": 16},
        },
    )
    return ReportData(
        studies=[info],
        trials=trials,
        domain_metrics=pl.DataFrame(metric_rows),
        layer_sparsity=layers,
        reeval=reeval,
        reeval_domains=reeval_domains,
        reference=pl.DataFrame(
            {
                "study": ["big"],
                "run_id": ["ref"],
                "auc": [0.76],
                "test_auc": [0.76],
                "flops_ratio": [1.0],
            }
        ),
        domains=pl.DataFrame(
            {
                "study": "big",
                "domain": domains,
                "group": [k % 3 for k in range(n_domains)],
                "train_rows": [int(1e6 / (k + 1)) for k in range(n_domains)],
                "pos_rate": 0.1,
                "oracle_auc": 0.8,
            }
        ),
        keep=keep,
    )


@pytest.mark.slow
def test_fifty_trial_report_stays_small():
    data = fabricated_study()
    assert data.trials["on_front"].sum() >= 12
    page, n_figures = render_page("big", [], [], make_sections(data))
    assert n_figures == 1 + 1 + 3 * 12 + 1 + 1 + 6
    library = len(get_plotlyjs())
    assert len(page.encode()) < 6_000_000, f"{len(page) / 1e6:.2f} MB"
    assert len(page.encode()) - library < 1_000_000  # figures and tables: under 1 MB for 50 trials


def test_static_export_with_kaleido(tmp_path):
    pytest.importorskip("kaleido", reason="kaleido is optional (static export for papers)")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("kaleido needs Chromium: apt-get install -y chromium")
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    sections = [
        Section("pareto", "P", "", [Block(figure=fig)]),
        Section("structure", "S", "", [Block(views=[StructureView("s#3", "trial 3", [fig])])]),
    ]
    files, note = export_static(sections, tmp_path, "png")
    assert [f.name for f in files] == ["pareto-01.png", "structure-01-s_3.png"], note
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)


def test_empty_and_single_objective_studies_without_mlflow(tmp_path):
    """A study just started, and a single-objective one with no MLflow: notes, not crashes."""
    for name in ("empty", "single"):
        (tmp_path / name).mkdir()
    optuna.create_study(
        study_name="empty",
        storage=f"sqlite:///{tmp_path}/empty/optuna.db",
        directions=["maximize", "minimize"],
    )
    single = optuna.create_study(
        study_name="single", storage=f"sqlite:///{tmp_path}/single/optuna.db"
    )
    dist = {"train.lr": optuna.distributions.FloatDistribution(1e-5, 1, log=True)}
    for i in range(4):
        single.add_trial(
            optuna.trial.create_trial(
                value=0.7 + i / 100, params={"train.lr": 10 ** -(i + 1)}, distributions=dist
            )
        )
    empty = build(["empty"], None, tmp_path / "out", studies_dir=tmp_path)
    page = empty.path.read_text()
    assert (
        empty.figures == 0
        and "no completed trial with both" in page
        and "no completed trial yet" in page
    )
    one = build(["single"], None, tmp_path / "out", studies_dir=tmp_path)
    page = one.path.read_text()
    assert "no mlflow_uri in the study" in page and "hypervolume history" not in page
    assert one.figures == 4  # history, importances, parallel coordinates, slices
