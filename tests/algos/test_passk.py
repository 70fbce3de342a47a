"""pass@k, coverage curves and samples-to-match: hand values, brute force, edge cases."""

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretorl.algos import coverage_curve, pass_at_k, power_of_two_ks, samples_to_match


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - 1/6
        (4, 3, 2, 1.0),  # n - c < k
        (4, 0, 4, 0.0),
        (5, 5, 1, 1.0),
        (10, 3, 4, 5 / 6),  # 1 - 35/210
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_large_n_is_stable():
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5, rel=1e-12)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001, rel=1e-12)
    exact = 1 - Fraction(math.comb(1024 - 37, 300), math.comb(1024, 300))
    assert pass_at_k(1024, 37, 300) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n)))
)
def test_equals_brute_force_over_all_k_subsets(nck):
    n, c, k = nck
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    expected = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_power_of_two_ks():
    assert power_of_two_ks(1) == [1]
    assert power_of_two_ks(8) == [1, 2, 4, 8]
    assert power_of_two_ks(10) == [1, 2, 4, 8]
    assert power_of_two_ks(1024)[-1] == 1024 and len(power_of_two_ks(1023)) == 10
    with pytest.raises(ValueError):
        power_of_two_ks(0)


def test_coverage_curve_by_hand():
    curve = coverage_curve(4, [0, 1, 4])
    assert list(curve) == [1, 2, 4]
    assert curve[1] == pytest.approx((0 + 0.25 + 1) / 3)
    assert curve[2] == pytest.approx((0 + 0.5 + 1) / 3)
    assert curve[4] == pytest.approx(2 / 3)
    assert coverage_curve(4, [2, 2, 1], ks=[3]) == {3: pytest.approx((1 + 1 + 0.75) / 3)}
    with pytest.raises(ValueError, match="empty"):
        coverage_curve(4, [])


KS = [1, 2, 4, 8]
B = [0.1, 0.2, 0.3, 0.4]


def test_samples_to_match_interpolates_in_log_k():
    # target 0.4 first reached between k=2 (0.35) and k=4 (0.45): halfway in log k, k* = 2^1.5
    assert samples_to_match(KS, [0.2, 0.35, 0.45, 0.5], B) == pytest.approx(2**1.5)
    assert samples_to_match(KS, [0.1, 0.4, 0.45, 0.5], B) == pytest.approx(
        4.0
    )  # hit exactly at k=2


def test_samples_to_match_edges():
    assert samples_to_match(KS, [0.5, 0.6, 0.7, 0.8], B) == 8.0  # reached at ks[0]: lower bound
    assert samples_to_match(KS, [0.1, 0.2, 0.3, 0.39], B) == 0.0  # never reached: below 1, not measurable
    assert samples_to_match(KS, B, B) == pytest.approx(1.0)
    assert samples_to_match([1, 2], [0.2, 0.4], [0.3, 0.4]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        samples_to_match(KS, B[:3], B)
    with pytest.raises(ValueError):
        samples_to_match([1, 4, 2, 8], B, B)


def test_samples_to_match_on_coverage_curves():
    n = 16
    ks = power_of_two_ks(n)
    strong = coverage_curve(n, [4, 8, 1, 16, 2])
    weak = coverage_curve(n, [1, 2, 0, 16, 0])
    gain = samples_to_match(ks, [strong[k] for k in ks], [weak[k] for k in ks])
    assert 1.0 < gain < n
    assert samples_to_match(ks, [weak[k] for k in ks], [strong[k] for k in ks]) == 0.0
