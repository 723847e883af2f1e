"""Report figures and their numerical pieces on small hand-made tables: the Pareto front,
orderings, overlap, and every figure function (axes, trace counts, the front's points)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import plotly.graph_objects as go
import polars as pl
import pytest

from adasparse_lab.report.diagnostics import diagnostics
from adasparse_lab.report.domain_figures import domain_fronts_figure, gain_figure
from adasparse_lab.report.figures import (
    BUTTON_LABELS,
    axis_toggle,
    band_figure,
    cost_axes,
    pareto_figure,
)
from adasparse_lab.report.html import Block, Section, StructureView, render_page, table_html
from adasparse_lab.report.structure import (
    keep_map_figure,
    overlap_figure,
    sparsity_heatmap,
)
from adasparse_lab.report.style import PALETTE, colors_for
from adasparse_lab.results.front import pareto_mask, spread_pick
from adasparse_lab.results.fronts import (
    mark_front,
    reference_point,
    study_reference_point,
)
from adasparse_lab.results.keep import jaccard, neuron_order, similarity_order, structure_order
from adasparse_lab.results.tables import band_varies, domain_gains
from adasparse_lab.store.reader import legacy_method

MAX_MIN = ["maximize", "minimize"]


def trials_table(study: str = "s") -> pl.DataFrame:
    """Six trials: four on the front (two tied), one dominated, one failed with the best values."""
    return pl.DataFrame(
        {
            "study": [study] * 6,
            "number": [0, 1, 2, 3, 4, 5],
            "state": ["COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "COMPLETE"],
            "auc": [0.80, 0.79, 0.78, 0.81, 0.99, 0.75],
            "flops_ratio": [1.0, 0.5, 0.6, 1.2, 0.1, 0.3],
            "sparsity": [0.1, 0.3, 0.25, 0.05, None, 0.5],
            "band_lo": [0.1, 0.2, 0.2, 0.0, 0.3, 0.4],
            "band_hi": [0.2, 0.3, 0.3, 0.1, 0.4, 0.5],
            "pruner_form": [
                "fusion",
                "binarization",
                "fusion",
                "scaling",
                "fusion",
                "binarization",
            ],
            "run_id": [f"run{i}" for i in range(6)],
            "param:regularizer.lambda_end": [1.0, 3.0, 2.0, 0.5, 9.0, 30.0],
        }
    )


FRONT = [(0.3, 0.75), (0.5, 0.79), (1.0, 0.80), (1.2, 0.81)]  # (FLOPs, AUC) sorted by FLOPs


def test_pareto_mask_known_points():
    pts = np.array(
        [
            [0.80, 1.0],
            [0.79, 0.5],
            [0.78, 0.6],
            [0.81, 1.2],
            [0.75, 0.3],
            [0.79, 0.5],
            [np.nan, 0.1],
        ]
    )
    assert pareto_mask(pts, MAX_MIN).tolist() == [True, True, False, True, True, True, False]
    # Both minimised: only the origin-most points survive.
    assert pareto_mask(
        np.array([[1, 2], [2, 1], [2, 2], [3, 3]]), ["minimize", "minimize"]
    ).tolist() == [True, True, False, False]
    assert pareto_mask(np.array([[0.7], [0.9], [0.9]]), ["maximize"]).tolist() == [
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="minimize"):
        pareto_mask(pts, ["max", "min"])


def test_mark_front_ignores_failed_trials_and_separates_studies():
    both = pl.concat([trials_table("a"), trials_table("b").with_columns(auc=pl.col("auc") - 0.1)])
    marked = mark_front(both)
    for study in ("a", "b"):
        on = marked.filter((pl.col("study") == study) & pl.col("on_front"))["number"].to_list()
        assert on == [0, 1, 3, 5]  # trial 4 failed; trial 2 is dominated by trial 1


def test_jaccard_and_orderings():
    kept = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool
    )
    j = jaccard(kept)
    assert j[0, 1] == 1.0 and j[0, 2] == 0.0 and j[0, 3] == pytest.approx(1 / 3) and j[4, 4] == 1.0
    # Two blocks of identical domains, interleaved: the order makes each block contiguous.
    groups = np.array([0, 1, 0, 1, 0, 1])
    sim = (groups[:, None] == groups[None, :]).astype(float) * 0.9 + 0.05
    order = similarity_order(sim)
    assert sorted(order.tolist()) == list(range(6))
    labels = groups[order]
    assert (labels[:3] == labels[0]).all() and (labels[3:] == labels[3]).all()
    # Neurons: kept by all first, then by pattern (domain 0's neurons before domain 1's).
    kp = np.array([[0.9, 0.0, 0.8, 1.0, 0.0], [0.0, 0.9, 0.0, 1.0, 0.2]])
    assert neuron_order(kp).tolist() == [3, 0, 2, 1, 4]
    assert reference_point(np.array([[0.7, 0.5], [0.8, 1.0]]), MAX_MIN) == pytest.approx(
        [0.695, 1.025]
    )
    assert spread_pick(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 3).tolist() == [1, 2, 0]


def test_study_reference_point_stored_then_config_then_data():
    """The driver stores the configured point; older studies: their stored config's point;
    else one derived from the data, and the report says which."""
    values = np.array([[0.7, 0.5], [0.8, 1.0]])
    config = "study:\n  name: old\n  hypervolume_reference: [0.6, 2.0]\n"
    assert study_reference_point(
        {"hypervolume_reference": [0.5, 3.0], "config": config}, values, MAX_MIN
    ) == ([0.5, 3.0], "configured")
    point, source = study_reference_point({"config": config}, values, MAX_MIN)
    assert point == [0.6, 2.0] and "study's config" in source
    point, source = study_reference_point({"config": "seed: 0\n"}, values, MAX_MIN)
    assert point == pytest.approx([0.695, 1.025]) and source.startswith("derived")


def _xy(trace) -> list[tuple[float, float]]:
    return list(zip(trace.x, trace.y))


def test_pareto_figure_points_front_reference_and_reeval():
    trials = trials_table()
    reference = pl.DataFrame(
        {"study": ["s"], "run_id": ["ref"], "auc": [0.805], "test_auc": [0.8], "flops_ratio": [1.0]}
    )
    reeval = pl.DataFrame(
        {
            "study": ["s", "s"],
            "number": [1, 5],
            "n_seeds": [3, 3],
            "test_auc_mean": [0.78, 0.74],
            "test_auc_sd": [0.004, 0.006],
            "flops_ratio_mean": [0.52, None],
        }
    )
    fig = pareto_figure(trials, reference, reeval, color_by="pruner_form")
    names = [t.name for t in fig.data]
    assert names == [
        "binarization",
        "fusion",
        "scaling",
        "front",
        "dense reference",
        "test re-evaluation (mean ± sd over seeds)",
    ]
    assert fig.layout.xaxis.title.text.startswith("FLOPs ratio")
    assert fig.layout.yaxis.title.text.startswith("mean per-domain AUC")
    shown = sorted(p for t in fig.data[:3] for p in _xy(t))
    assert len(shown) == 5 and (0.1, 0.99) not in shown  # the failed trial is left out
    front = fig.data[3]
    assert _xy(front) == FRONT and front.line.shape == "hv"
    assert _xy(fig.data[4]) == [(1.0, 0.805)] and fig.data[4].marker.symbol == "star"
    rv = fig.data[5]
    assert _xy(rv) == [(0.52, 0.78), (0.3, 0.74)]  # no re-eval FLOPs: the trial's own
    assert list(rv.error_y.array) == [0.004, 0.006]
    hover = fig.data[0].text[0]
    assert "trial 1" in hover and "run1" in hover and "regularizer.lambda_end = 3" in hover


def test_pareto_figure_numeric_colour_and_two_studies():
    fig = pareto_figure(trials_table(), color_by="param:regularizer.lambda_end")
    assert [t.name for t in fig.data] == ["trials", "front"]
    assert fig.data[0].marker.showscale and list(fig.data[0].marker.color) == [
        1.0,
        3.0,
        2.0,
        0.5,
        30.0,
    ]
    two = pl.concat(
        [trials_table("a"), trials_table("b").with_columns(flops_ratio=pl.col("flops_ratio") * 2)]
    )
    fig = pareto_figure(two)
    assert [t.name for t in fig.data] == ["a: trials", "a: front", "b: trials", "b: front"]
    assert _xy(fig.data[3]) == [(2 * x, y) for x, y in FRONT]


def domains_table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study": ["s"] * 3,
            "domain": ["small", "big", "mid"],
            "group": [0, 1, 0],
            "train_rows": [100, 10_000, 1_000],
            "pos_rate": [0.1, 0.2, 0.3],
            "oracle_auc": [0.9, 0.85, 0.8],
        }
    )


def domain_points(spec, latency: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-domain points of trials ``spec`` = [(auc, flops, latency, method), ...] on the
    domains small/big/mid (domain k adds k/100 to the AUC and k/10 to the latency), and the
    dense reference of each domain."""
    rows = [
        {
            "study": "s",
            "number": number,
            "domain": d,
            "val_auc": auc + k / 100,
            "flops_ratio": flops,
            **({"latency_ratio": lat + k / 10, "method": method} if latency else {}),
        }
        for number, (auc, flops, lat, method) in enumerate(spec)
        for k, d in enumerate(["small", "big", "mid"])
    ]
    reference = {
        "study": ["s"] * 3,
        "domain": ["small", "big", "mid"],
        "val_auc": [0.71, 0.73, 0.72],
        "flops_ratio": [1.0] * 3,
    }
    if latency:
        reference["latency_ratio"] = [1.0] * 3
    return pl.DataFrame(rows), pl.DataFrame(reference)


def test_domain_fronts_small_multiples_ordered_by_size():
    spec = [(0.70, 0.5, None, None), (0.72, 0.8, None, None), (0.69, 0.9, None, None)]
    points, reference = domain_points(spec)
    fig = domain_fronts_figure(points, domains_table(), reference)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["big · 10,000 rows", "mid · 1,000 rows", "small · 100 rows"]
    assert len(fig.data) == 3 * 3  # per panel: points, front, reference
    big_front = next(t for t in fig.data if t.name == "front" and t.xaxis == "x")
    assert _xy(big_front) == [(0.5, 0.71), (0.8, 0.73)]  # the first panel is "big"
    assert fig.layout.xaxis.title.text == "FLOPs ratio" and fig.layout.yaxis.title.text == "val AUC"


def test_gain_table_and_figure_prefer_reeval_means():
    trials = mark_front(trials_table())
    metrics = []
    for number in range(6):
        for d, base in [("small", 0.70), ("big", 0.80), ("mid", 0.75)]:
            metrics.append(
                {
                    "study": "s",
                    "kind": "trial",
                    "number": number,
                    "domain": d,
                    "test_auc": base + 0.01,
                    "val_auc": base,
                    "flops_ratio": 0.5,
                }
            )
    for d, base in [("small", 0.70), ("big", 0.80), ("mid", 0.75)]:
        metrics.append(
            {
                "study": "s",
                "kind": "reference",
                "number": None,
                "domain": d,
                "test_auc": base,
                "val_auc": base,
                "flops_ratio": 1.0,
            }
        )
    reeval = pl.DataFrame(
        {
            "study": ["s"],
            "number": [1],
            "domain": ["small"],
            "test_auc_mean": [0.73],
            "test_auc_sd": [0.01],
        }
    )
    gains = domain_gains(trials, pl.DataFrame(metrics), reeval, domains_table())
    assert gains["number"].unique().sort().to_list() == [0, 1, 3, 5]
    small1 = gains.filter((pl.col("number") == 1) & (pl.col("domain") == "small"))
    assert small1["gain"][0] == pytest.approx(0.03) and small1["gain_sd"][0] == pytest.approx(0.01)
    assert gains.filter(pl.col("number") == 0)["gain"].to_list() == pytest.approx([0.01] * 3)
    fig = gain_figure(gains)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == [100, 1_000, 10_000]  # sorted by domain size
    # 1-2-5 ticks in SI units (100, 200, 500, 1k, ...), by Plotly's log-axis ticks
    assert (fig.layout.xaxis.dtick, fig.layout.xaxis.tickformat) == ("D2", "~s")
    assert [tr.name for tr in fig.data] == gains["label"].unique(maintain_order=True).to_list()
    assert fig.layout.yaxis.title.text == "test AUC − dense reference AUC"
    assert fig.layout.shapes[0].y0 == 0


def test_band_figure():
    trials = trials_table()
    assert band_varies(trials)
    assert not band_varies(trials.with_columns(band_lo=pl.lit(0.1), band_hi=pl.lit(0.2)))
    reference = pl.DataFrame({"study": ["s"], "auc": [0.8]})
    fig = band_figure(trials, reference)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 5
    assert list(fig.data[0].marker.color) == [0.15, 0.25, 0.25, 0.05, 0.45]
    assert fig.layout.shapes[0].y0 == 0.8
    assert fig.layout.xaxis.title.text.startswith("achieved sparsity")


def keep_table() -> pl.DataFrame:
    """4 domains in two true groups: group 0 keeps neurons 0-2, group 1 neurons 3-5; neuron 6
    is kept by every domain; layer 2 has 2 neurons, kept by 'a' and 'c' only."""
    rows = []
    groups = {"a": 0, "b": 1, "c": 0, "d": 1}
    for d, g in groups.items():
        for n in range(7):
            keep = 1.0 if n == 6 or (n // 3) == g else 0.0
            rows.append({"domain": d, "position": 1, "neuron": n, "keep_prob": keep})
        for n in range(2):
            rows.append(
                {"domain": d, "position": 2, "neuron": n, "keep_prob": 1.0 if g == 0 else 0.1}
            )
    return pl.DataFrame(rows)


def structure_domains() -> pl.DataFrame:
    return pl.DataFrame(
        {"domain": ["a", "b", "c", "d"], "group": [0, 1, 0, 1], "train_rows": [40, 30, 20, 10]}
    )


def test_structure_figures():
    keep, domains = keep_table(), structure_domains()
    order = structure_order(keep, domains)
    assert sorted(order) == ["a", "b", "c", "d"]
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset("ac"), frozenset("bd")}

    layers = keep.group_by("domain", "position").agg(sparsity=1 - pl.col("keep_prob").mean())
    heat = sparsity_heatmap(layers, order, domains, "t")
    assert list(heat.data[0].x) == ["layer 1", "layer 2"]
    row_a = heat.data[0].z[order.index("a")]
    assert row_a == [pytest.approx(round(3 / 7, 3)), 0.0]
    assert "a · g0" in heat.data[0].y[order.index("a")]

    maps = keep_map_figure(keep, order, domains, "t")
    assert len(maps.data) == 2 and [a.text for a in maps.layout.annotations] == [
        "layer 1 (7 neurons)",
        "layer 2 (2 neurons)",
    ]
    z = np.asarray(maps.data[0].z)
    assert z.dtype == np.uint8 and z.shape == (4, 7)
    assert (z[:, 0] == 100).all()  # the shared neuron first
    assert z[order.index("a")].tolist() == z[order.index("c")].tolist()

    overlap = overlap_figure(keep, order, domains, "t")
    sim = np.array(overlap.data[0].z)
    ia, ib, ic = order.index("a"), order.index("b"), order.index("c")
    # a and c keep the same 4+2 neurons; a and b share only the always-kept neuron of 9 kept.
    assert sim[ia, ic] == 1.0 and sim[ia, ib] == pytest.approx(round(1 / 9, 3))
    marks = overlap.data[1]
    assert (
        overlap.data[1].name == "same true group" and len(marks.x) == 4
    )  # (a,c),(c,a),(b,d),(d,b)


def test_structure_without_groups_or_keep():
    domains = structure_domains().with_columns(group=pl.lit(None, pl.Int64))
    keep = keep_table()
    order = structure_order(keep, domains)
    assert len(overlap_figure(keep, order, domains, "t").data) == 1  # no group marks
    empty = keep.clear()
    assert structure_order(empty, domains) == ["a", "b", "c", "d"]  # by training size


def _study(directions: list[str], n: int = 6) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    dist = {
        "x": optuna.distributions.FloatDistribution(0, 1),
        "form": optuna.distributions.CategoricalDistribution(["fusion", "scaling"]),
    }
    for i in range(n):
        x = i / n
        values = [0.7 + 0.05 * x, 1 - x][: len(directions)]
        study.add_trial(
            optuna.trial.create_trial(
                values=values,
                params={"x": x, "form": ["fusion", "scaling"][i % 2]},
                distributions=dist,
                user_attrs={"cpu_s": 10.0},
            )
        )
    return study


def test_diagnostics_multi_and_single_objective():
    objs = [
        {"name": "val/mean_domain_auc", "direction": "maximize"},
        {"name": "val/flops/ratio", "direction": "minimize"},
    ]
    multi = diagnostics(_study(["maximize", "minimize"]), objs)
    titles = [d.title for d in multi]
    assert [t.split(" (")[0] for t in titles] == [
        "optimisation history: val/mean_domain_auc",
        "optimisation history: val/flops/ratio",
        "hypervolume history",
        "search efficiency: hypervolume against cumulative trial CPU-seconds",
        "parameter importances",
        "parallel coordinates",
        "slices",
    ]
    assert all(isinstance(d.figure, go.Figure) for d in multi), [d.note for d in multi]
    single = diagnostics(_study(["maximize"]), objs[:1])
    assert not any("hypervolume" in d.title for d in single) and len(single) == 4
    empty = diagnostics(optuna.create_study(), objs[:1])
    assert len(empty) == 1 and empty[0].figure is None and "no completed" in empty[0].note


def test_search_efficiency_marks_stopped_trials_at_what_they_cost():
    """The x axis adds every ended trial's CPU-seconds (a stopped one's too); the hypervolume
    moves only with COMPLETE trials; a stopped trial is marked with its rung."""
    from adasparse_lab.report.diagnostics import _search_efficiency

    study = _study(["maximize", "minimize"], n=2)  # hypervolume after them: known below
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            params={"x": 0.9, "form": "fusion"},
            distributions=study.trials[0].distributions,
            user_attrs={"cpu_s": 1.5, "pruned_at": 0.1111},
        )
    )
    study.set_user_attr("hypervolume_reference", [0.5, 3.0])
    objs = [
        {"name": "val/mean_domain_auc", "direction": "maximize"},
        {"name": "val/flops/ratio", "direction": "minimize"},
    ]
    diag = _search_efficiency(study, objs, "")
    line, complete, pruned = diag.figure.data
    assert list(line.x) == [10.0, 20.0, 21.5]
    # (0.725, 0.5) dominates (0.7, 1.0); against (0.5, 3.0): 0.2 * 2.0, then 0.225 * 2.5
    assert list(line.y) == pytest.approx([0.2 * 2.0, 0.225 * 2.5, 0.225 * 2.5])
    assert list(pruned.x) == [21.5] and "stopped at 0.111 of its rows" in pruned.text[0]
    assert "1 of 3 ended trials stopped early" in diag.title
    assert list(complete.x) == [10.0, 20.0]


def test_page_inlines_plotlyjs_once_and_counts_figures():
    figs = [go.Figure(go.Scatter(x=[1], y=[2])) for _ in range(3)]
    sections = [
        Section("a", "A", "read <b>this</b>", [Block(figure=figs[0]), Block(html="<p>x</p>")]),
        Section(
            "b",
            "B",
            "",
            [
                Block(
                    views=[
                        StructureView("s#1", "trial 1", [figs[1]]),
                        StructureView("s#2", "trial 2", [figs[2]]),
                    ]
                )
            ],
        ),
    ]
    page, n = render_page("T <x>", ["sub"], ["line"], sections)
    assert n == 3 and 'data-figures-expected="3"' in page
    assert (
        page.count("Plotly.newPlot(") >= 3 and page.count('<script type="text/javascript">/**') <= 1
    )
    assert page.count("plotly.js v") >= 1 and page.count('src="https://cdn') == 0
    assert page.count('class="structure-view"') == 2 and page.count("hidden>") == 1
    assert "<title>T &lt;x&gt;</title>" in page and '<option value="s#2">trial 2</option>' in page
    table = table_html([("a", "A", "num"), ("b", "B<", "text")], [{"a": 1.0, "b": "<i>"}])
    assert (
        "&lt;i&gt;" in table and "B&lt;" in table and 'data-v="1.0"' in table and "<i>" not in table
    )
    assert math.isclose(float(table.split('data-v="')[1].split('"')[0]), 1.0)


METHODS = ["adasparse-fusion", "magnitude", "adasparse-fusion-domain", "dense", "random", "random"]
LATENCY = [2.1, 0.6, 0.55, 1.0, 0.9, 0.4]


def test_methods_of_one_family_get_distinct_colours():
    """A sparsity study's methods are all fusion variants (input, rank): each needs its own
    colour, or the front cannot say which variant a point is."""
    methods = sorted(
        [
            "adasparse-fusion",
            "adasparse-fusion-domain",
            "adasparse-fusion-domain-r8",
            "adasparse-fusion-domain-r16",
            "adasparse-fusion-domain-r32",
            "adasparse-fusion-r8",
            "adasparse-fusion-r16",
            "magnitude",
        ]
    )
    colours = colors_for(methods)
    assert len(set(colours.values())) == len(methods), colours
    many = [f"adasparse-fusion-domain-r{r}" for r in range(1, len(PALETTE) + 1)]
    assert len(set(colors_for(["magnitude", *many]).values())) == len(many) + 1


def test_pareto_figure_one_trace_per_method_and_a_latency_axis():
    trials = trials_table().with_columns(
        method=pl.Series(METHODS), latency_ratio=pl.Series(LATENCY)
    )
    fig = pareto_figure(trials, x="flops_ratio")  # colours by method by default
    points = fig.data[:5]  # trial 4 failed: its method (random) keeps trial 5 only
    assert [t.name for t in points] == sorted(set(METHODS))
    for t in points:
        assert t.marker.color == colors_for(METHODS)[t.name]
    fixed = colors_for(["adasparse-fusion", "adasparse-fusion-domain"])
    assert fixed["adasparse-fusion"] != fixed["adasparse-fusion-domain"]
    magnitude = fig.data[[t.name for t in fig.data].index("magnitude")]
    assert _xy(magnitude) == [(0.5, 0.79)]
    assert "· magnitude" in magnitude.text[0] and "FLOPs 0.500 · latency 0.600" in magnitude.text[0]
    lat = pareto_figure(trials, x="latency_ratio")
    assert lat.layout.xaxis.title.text.startswith("measured latency ratio")
    by_name = {t.name: t for t in lat.data}
    assert _xy(by_name["magnitude"]) == [(0.6, 0.79)] and _xy(by_name["random"]) == [(0.4, 0.75)]
    # The front on latency (trial 0 at 2.1 is beaten by trial 3 at 1.0 with a higher AUC).
    assert _xy(by_name["front"]) == [(0.4, 0.75), (0.55, 0.78), (0.6, 0.79), (1.0, 0.81)]


def test_axis_toggle_switches_visible_traces_and_axis_titles():
    trials = trials_table().with_columns(
        method=pl.Series(METHODS), latency_ratio=pl.Series(LATENCY)
    )
    assert cost_axes(trials) == ["flops_ratio", "latency_ratio"]
    assert cost_axes(trials.drop("latency_ratio")) == ["flops_ratio"]
    assert cost_axes(trials.with_columns(latency_ratio=None)) == ["flops_ratio"]
    views = {BUTTON_LABELS[x]: pareto_figure(trials, x=x) for x in cost_axes(trials)}
    n_flops, n_lat = (len(f.data) for f in views.values())
    fig = axis_toggle(views)
    assert len(fig.data) == n_flops + n_lat
    assert [t.visible for t in fig.data] == [None] * n_flops + [False] * n_lat
    (menu,) = fig.layout.updatemenus
    flops_button, latency_button = menu.buttons
    assert (flops_button.label, latency_button.label) == ("analytic FLOPs", "measured latency")
    assert latency_button.args[0]["visible"] == [False] * n_flops + [True] * n_lat
    assert latency_button.args[1]["xaxis.title.text"].startswith("measured latency ratio")
    assert flops_button.args[1]["xaxis.title.text"].startswith("FLOPs ratio")
    hidden = [t for t in fig.data if t.visible is False]
    assert {t.name for t in hidden} >= {"magnitude", "front"}
    single = pareto_figure(trials.drop("latency_ratio"))
    assert axis_toggle({"analytic FLOPs": single}) is single  # nothing to switch


def test_domain_fronts_coloured_by_method_on_either_cost_axis():
    spec = [
        (0.70, 0.5, 0.45, "magnitude"),
        (0.72, 0.8, 1.9, "adasparse-fusion"),
        (0.69, 0.9, 0.7, "magnitude"),
    ]
    points, reference = domain_points(spec, latency=True)
    for x in ("flops_ratio", "latency_ratio"):
        fig = domain_fronts_figure(points, domains_table(), reference, x=x)
        assert len(fig.data) == 3 * 4  # per panel: 2 methods, front, reference
        legend = [t.name for t in fig.data if t.showlegend]
        assert sorted(legend) == ["adasparse-fusion", "dense reference", "front", "magnitude"]
        big = [t for t in fig.data if t.xaxis == "x"]
        mag = next(t for t in big if t.name == "magnitude")
        assert mag.marker.color == colors_for(["magnitude"])["magnitude"]
        expected = [(0.5, 0.71), (0.9, 0.70)] if x == "flops_ratio" else [(0.55, 0.71), (0.8, 0.70)]
        assert sorted(_xy(mag)) == expected  # "big" is k = 1
    assert fig.layout.xaxis.title.text == "measured latency ratio"


def test_legacy_method_names():
    assert legacy_method("none") == "dense"
    assert legacy_method("fusion", "hidden+domain") == "adasparse-fusion"
    assert legacy_method("binarization", "domain") == "adasparse-binarization-domain"
    assert legacy_method("random", "domain") == "random"
    assert legacy_method(None) is None
