import itertools
import logging

import numpy as np
import pytest

from adasparse_lab.metrics import auc, evaluate_scores, safe_name


def brute_auc(labels, scores):
    """Independent count: P(score_pos > score_neg) + 0.5 P(tie) over all pairs."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300).tolist()
    scores = rng.integers(0, 20, 300).astype(float).tolist()  # many ties
    assert auc(np.array(labels), np.array(scores)) == pytest.approx(
        brute_auc(labels, scores), abs=1e-12
    )


def test_auc_and_logloss_hand_computed():
    # positives score 0.9, 0.4, 0.3; negatives 0.8, 0.4. Pairs won: 0.9 beats both (2),
    # 0.4 ties 0.4 (0.5), the rest lose: AUC = 2.5 / 6.
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.4, 0.4, 0.3])
    assert auc(labels, scores) == pytest.approx(5 / 12, abs=1e-15)
    # logits 0 everywhere: every row costs log 2; domain b has one class, so no AUC
    m = evaluate_scores(labels, np.zeros(5), np.array([0, 0, 0, 0, 1]), ["a", "b"])
    assert m.logloss == pytest.approx(np.log(2), abs=1e-15)
    assert [d.auc for d in m.domains] == [0.5, None]
    assert m.mean_domain_auc == 0.5 and m.excluded == ["b"]


def test_auc_extremes_and_single_class():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert np.isnan(auc(np.array([1, 1]), np.array([0.3, 0.4])))


def test_per_domain_metrics_gauc_and_exclusion(caplog):
    rng = np.random.default_rng(1)
    n = 600
    domain = np.repeat([0, 1, 2], n // 3)
    label = rng.integers(0, 2, n).astype(float)
    label[domain == 2] = 1.0  # one class only
    logit = rng.normal(size=n) + 2 * label
    user = rng.integers(0, 20, n)
    with caplog.at_level(logging.WARNING):
        m = evaluate_scores(
            label, logit, domain, ["a", "b", "c"], user=user, p_true=None, split="val"
        )
    assert "c" in caplog.text and m.excluded == ["c"]
    by_name = {d.name: d for d in m.domains}
    assert by_name["c"].auc is None
    for k, name in enumerate("ab"):
        sel = domain == k
        assert by_name[name].auc == pytest.approx(
            brute_auc(label[sel].tolist(), logit[sel].tolist())
        )
        assert by_name[name].rows == sel.sum()
        assert by_name[name].pos_rate == pytest.approx(label[sel].mean())
    assert m.mean_domain_auc == pytest.approx((by_name["a"].auc + by_name["b"].auc) / 2)
    # GAUC: impression-weighted mean of per-user AUC over users with both classes.
    num = den = 0.0
    for u in np.unique(user):
        sel = user == u
        if 0 < label[sel].sum() < sel.sum():
            num += brute_auc(label[sel].tolist(), logit[sel].tolist()) * sel.sum()
            den += sel.sum()
    assert m.gauc == pytest.approx(num / den)
    # logloss from logits equals the direct formula
    p = 1 / (1 + np.exp(-logit))
    assert m.logloss == pytest.approx(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p)))
    assert "val/auc/c" not in m.as_dict("val") and "val/auc/a" in m.as_dict("val")


def test_safe_name():
    assert safe_name("北京 ad#1") == "__ ad_1"
    assert safe_name("430548_1007") == "430548_1007"


def test_metrics_are_bit_identical_across_calls():
    # group_by returns groups in a thread-dependent order: sums over groups must not follow it
    rng = np.random.default_rng(0)
    n = 20000
    label = rng.integers(0, 2, n).astype(float)
    logit = rng.normal(size=n) + label
    user, domain = rng.integers(0, 2000, n), rng.integers(0, 3, n)
    runs = [evaluate_scores(label, logit, domain, ["a", "b", "c"], user=user) for _ in range(30)]
    assert len({(m.gauc, m.auc, m.logloss, m.mean_domain_auc) for m in runs}) == 1
    assert len({tuple(d.logloss for d in m.domains) for m in runs}) == 1


def test_a_domain_named_like_a_flops_aggregate_is_reported_not_lost(caplog):
    from adasparse_lab.run.evaluation import Evaluation, FlopsReport, SparsityReport

    names = ["ratio", "b"]
    y = np.array([0.0, 1.0, 0.0, 1.0])
    ev = Evaluation(
        evaluate_scores(y, y, np.array([0, 0, 1, 1]), names),
        SparsityReport(positions=[], keep_prob=[], rows=np.array([2.0, 2.0])),
        FlopsReport(dense=100.0, per_domain=np.array([50.0, 150.0]), overall=100.0, breakdown={}),
    )
    with caplog.at_level(logging.WARNING):
        out = ev.as_dict("val", names)
    assert out["val/flops/ratio"] == 1.0  # the aggregate, never the domain's value
    assert out["val/flops_ratio/ratio"] == 0.5 and out["val/flops/b"] == 150.0
    assert "'ratio'" in caplog.text and "val/flops/ratio" in caplog.text
