"""The comparison statistics against known values: scipy's binomial and chi-square tests, scikit-learn's scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from mghft import stats


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 1), (3, 9), (9, 3), (0, 12), (10, 10), (17, 40), (120, 150)])
def test_mcnemar_exact_is_scipys_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_mcnemar_exact_textbook_value() -> None:
    # 1 vs 9 discordant: 2 * (1 + 10) / 1024.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)


@pytest.mark.parametrize("b,c", [(3, 9), (17, 40), (120, 150), (40, 17), (5, 4)])
def test_mcnemar_chi2_is_scipys_chi_square(b: int, c: int) -> None:
    stat, p = stats.mcnemar_chi2(b, c)
    assert stat == pytest.approx((abs(b - c) - 1) ** 2 / (b + c))
    assert p == pytest.approx(sps.chi2.sf(stat, 1), rel=1e-10)
    stat0, p0 = stats.mcnemar_chi2(b, c, correction=False)
    assert stat0 == pytest.approx((b - c) ** 2 / (b + c)) and p0 == pytest.approx(sps.chi2.sf(stat0, 1))


def test_mcnemar_counts_discordant_items_and_picks_the_method() -> None:
    a = np.array([1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0], dtype=bool)
    r = stats.mcnemar(a, b)
    assert (r.b, r.c, r.method) == (2, 1, "exact") and r.p_value == pytest.approx(1.0)
    big_a = np.r_[np.ones(30, bool), np.zeros(10, bool)]
    big_b = np.r_[np.zeros(30, bool), np.ones(10, bool)]
    r = stats.mcnemar(big_a, big_b)
    assert (r.b, r.c, r.method) == (30, 10, "chi2")
    assert r.p_value == pytest.approx(sps.chi2.sf((20 - 1) ** 2 / 40, 1))
    with pytest.raises(ValueError, match="equally long"):
        stats.mcnemar(a, b[:3])


def test_scores_are_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    s = stats.run_scores(y, p, 4)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert s["weighted_f1"] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    full = stats.scores(stats.confusion(y, p, 4))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    assert np.allclose(full["precision"], prec) and np.allclose(full["recall"], rec) and np.allclose(full["f1"], f1)
    assert full["support"].tolist() == sup.tolist()


def test_no_answer_is_wrong_and_no_class_s_prediction() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0, -1, 1, -1])
    s = stats.scores(stats.confusion(y, p, 2))
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["precision"].tolist() == [1.0, 1.0] and s["recall"].tolist() == [0.5, 0.5]


def test_pooled_bootstrap_of_identical_seeds_is_the_single_run_interval() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    one = stats.pooled_bootstrap(y, p, 3, n_draws=300, seed=5)
    two = stats.pooled_bootstrap(y, np.stack([p, p]), 3, n_draws=300, seed=5)
    for m in stats.METRICS:
        assert one[m] == two[m]
    acc = one["accuracy"]
    assert acc.low < acc.value < acc.high and acc.value == pytest.approx(np.mean(y == p))
    assert one["per_class"][0]["support"] == int(np.sum(y == 0))


def test_group_bootstrap_is_wider_when_groups_are_correlated() -> None:
    # 20 groups of 20 items; each group is either all right or all wrong: the effective sample is 20, not 400.
    y = np.zeros(400, dtype=int)
    groups = np.repeat(np.arange(20), 20)
    p = np.where(groups % 2 == 0, 0, 1)
    by_item = stats.pooled_bootstrap(y, p, 2, n_draws=400, seed=0)["accuracy"]
    by_group = stats.pooled_bootstrap(y, p, 2, groups, n_draws=400, seed=0)["accuracy"]
    assert (by_group.high - by_group.low) > 3 * (by_item.high - by_item.low)


def test_paired_bootstrap_separates_a_worse_system_and_not_a_copy() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 400)
    good = np.stack([np.where(rng.random(400) < 0.9, y, (y + 1) % 3) for _ in range(3)])
    bad = np.stack([np.where(rng.random(400) < 0.6, y, (y + 1) % 3) for _ in range(3)])
    worse = stats.paired_bootstrap(y, bad, good, 3, n_draws=500, seed=0)
    acc = worse["accuracy"]
    assert acc.p_value is not None and acc.p_value < 0.01 and acc.difference.high < 0
    assert acc.difference.value == pytest.approx(np.mean(bad == y) - np.mean(good == y))
    assert acc.runs == (3, 3) and acc.method.startswith("Welch") and acc.p_value == max(acc.p_seeds, acc.p_bootstrap)
    same = stats.paired_bootstrap(y, good, good, 3, n_draws=500, seed=0)
    assert same["accuracy"].p_value == 1.0 and same["macro_f1"].difference.value == 0.0
    # One run on each side: no seed-aware test, said so; the bootstrap is still reported.
    single = stats.paired_bootstrap(y, bad[0], good[0], 3, n_draws=200, seed=0)["accuracy"]
    assert single.p_value is None and single.method == stats.NO_SEED_TEST and single.p_bootstrap < 0.01


def test_seed_spread_the_items_cannot_see_is_not_called_a_difference() -> None:
    # Two seeds of each system; within a system the seeds differ by 0.08 in accuracy, between systems the means
    # by 0.04: an item bootstrap of the pooled seeds calls that certain, the seed-aware test does not.
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 2000)
    runs = [np.where(rng.random(2000) < q, y, (y + 1) % 3) for q in (0.60, 0.68, 0.64, 0.72)]
    result = stats.paired_bootstrap(y, np.stack(runs[2:]), np.stack(runs[:2]), 3, n_draws=400, seed=0)
    acc = result["accuracy"]
    assert acc.p_bootstrap < 0.01 and acc.p_seeds is not None and acc.p_seeds > 0.05
    assert acc.p_value == acc.p_seeds and acc.difference.low < 0 < acc.difference.high


def test_macro_means_run_over_the_classes_with_support() -> None:
    # Class 2 is predicted once but absent from the items: it adds to no macro mean.
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0, 0, 2, 1, 1, 1])
    s = stats.run_scores(y, p, 3)
    expected = skm.f1_score(y, p, labels=[0, 1], average="macro", zero_division=0)
    assert s["macro_f1"] == pytest.approx(expected) and s["macro_f1"] == pytest.approx((0.8 + 1.0) / 2)
    full = stats.scores(stats.confusion(y, p, 3))
    assert full["macro_precision"] == pytest.approx(1.0) and full["macro_recall"] == pytest.approx((2 / 3 + 1) / 2)


def test_mean_std() -> None:
    assert stats.mean_std([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert stats.mean_std([0.5]) == (0.5, None)
