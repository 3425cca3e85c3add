"""The test ``mghft compare`` marks differences with keeps its level on simulated null systems.

Two systems drawn from one distribution (3 training seeds each, 1000 items, 7 unbalanced classes): each run gets a
skill offset whose spread across seeds gives a per-seed accuracy sd of 0, 0.01 or 0.02, and answers each item right
with a probability set by the item's difficulty and that offset (wrong answers fall on another class at random).
Whatever the seed-to-seed spread, the share of tables that call the difference significant must stay at the
nominal 5% (plus Monte Carlo error) for every metric column; with 10 systems and 3 columns, Holm's correction must
keep the share of tables with any mark at 5%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mghft import stats

N_ITEMS, N_CLASSES, N_SEEDS = 1000, 7, 3
PRIOR = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05])
ALPHA = 0.05
DRAWS = 100  # bootstrap draws per table: p-values down to 0.02, enough to decide at 0.05


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Thousands of small matrix products: one BLAS thread each is many times faster than contending threads."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _mc_bound(tables: int) -> float:
    """The nominal rate plus three Monte Carlo standard errors of a rate estimated from ``tables`` tables."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / tables)


class NullWorld:
    """Items and runs: every system is the same distribution of training outcomes."""

    def __init__(self, rng: np.random.Generator, seed_sd: float) -> None:
        self.rng = rng
        self.y = rng.choice(N_CLASSES, N_ITEMS, p=PRIOR)
        self.logit = 0.9 + rng.normal(0.0, 1.0, N_ITEMS)  # item difficulty: about 70% right
        p = 1 / (1 + np.exp(-self.logit))
        # d(accuracy)/d(offset) = mean p(1 - p): the offset sd that gives the asked accuracy sd across seeds.
        self.offset_sd = seed_sd / float(np.mean(p * (1 - p)))

    def system(self, seeds: int = N_SEEDS) -> np.ndarray:
        """(seeds, N) predictions of one system."""
        offset = self.rng.normal(0.0, self.offset_sd, (seeds, 1)) if self.offset_sd else np.zeros((seeds, 1))
        right = self.rng.random((seeds, N_ITEMS)) < 1 / (1 + np.exp(-(self.logit[None] + offset)))
        other = (self.y[None] + self.rng.integers(1, N_CLASSES, (seeds, N_ITEMS))) % N_CLASSES
        return np.where(right, self.y[None], other)


def test_the_simulation_has_the_seed_spread_it_claims() -> None:
    world = NullWorld(np.random.default_rng(0), 0.02)
    acc = np.array([np.mean(world.system(1)[0] == world.y) for _ in range(400)])
    # Per-seed sd = sqrt(offset part^2 + per-item noise^2), the noise part about sqrt(0.7 * 0.3 / 1000) = 0.0145.
    assert np.std(acc) == pytest.approx(math.hypot(0.02, 0.0145), rel=0.15)
    assert 0.6 < acc.mean() < 0.8


@pytest.mark.parametrize("seed_sd", [0.0, 0.01, 0.02])
def test_null_rejection_rate_stays_at_five_percent_for_every_metric(seed_sd: float) -> None:
    tables = 300
    rng = np.random.default_rng(round(seed_sd * 1000) + 7)
    rejected = dict.fromkeys(stats.METRICS, 0)
    for t in range(tables):
        world = NullWorld(rng, seed_sd)
        result = stats.paired_bootstrap(world.y, world.system(), world.system(), N_CLASSES, n_draws=DRAWS, seed=t)
        for m in stats.METRICS:
            p = result[m].p_value
            rejected[m] += p is not None and p < ALPHA
    rates = {m: r / tables for m, r in rejected.items()}
    print(f"seed sd {seed_sd}: null rejection rate {rates} over {tables} tables (bound {_mc_bound(tables):.3f})")
    assert all(rate <= _mc_bound(tables) for rate in rates.values()), (seed_sd, rates, _mc_bound(tables))


def test_holm_keeps_the_chance_of_any_mark_in_a_ten_system_table_at_five_percent() -> None:
    tables, systems = 100, 10
    rng = np.random.default_rng(11)
    any_mark = 0
    for t in range(tables):
        world = NullWorld(rng, 0.01)
        reference = world.system()
        p_values: list[float | None] = []
        for s in range(systems - 1):
            result = stats.paired_bootstrap(world.y, world.system(), reference, N_CLASSES, n_draws=DRAWS, seed=t + s)
            p_values += [result[m].p_value for m in stats.METRICS]
        adjusted = stats.holm(p_values)
        any_mark += any(p is not None and p < ALPHA for p in adjusted)
    print(f"10-system null tables with a mark: {any_mark / tables:.3f} of {tables} (bound {_mc_bound(tables):.3f})")
    assert any_mark / tables <= _mc_bound(tables), any_mark / tables


def test_holm_adjusts_step_down_and_skips_missing_tests() -> None:
    assert stats.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([]) == []


def test_the_seed_test_is_welch_and_student_with_one_run() -> None:
    from scipy import stats as sp

    a, b = [0.70, 0.72, 0.69], [0.66, 0.68, 0.665, 0.67]
    t = stats.seed_t_test(a, b)
    assert t is not None and t["p_value"] == pytest.approx(sp.ttest_ind(a, b, equal_var=False).pvalue)
    one = stats.seed_t_test([0.75], b)
    assert one is not None and one["df"] == 3 and "Student" in one["method"]
    assert one["p_value"] == pytest.approx(sp.ttest_ind([0.75], b, equal_var=True).pvalue)
    assert stats.seed_t_test([0.7], [0.6]) is None


def test_one_run_each_makes_no_seed_aware_test_and_says_so() -> None:
    world = NullWorld(np.random.default_rng(3), 0.0)
    result = stats.paired_bootstrap(world.y, world.system(1), world.system(1), N_CLASSES, n_draws=50)
    assert all(result[m].p_value is None and result[m].method == stats.NO_SEED_TEST for m in stats.METRICS)
