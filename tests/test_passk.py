"""tasks/metrics/passk.py: the unbiased pass@k estimator against the exact binomial formula."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from tasks.metrics.passk import pass_at_k


def exact(n: int, c: int, k: int) -> float:
    return 1.0 - comb(n - c, k) / comb(n, k)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16, 50, 200])
def test_matches_exact_formula_on_full_grid(n):
    for k in sorted({1, min(2, n), max(n // 2, 1), max(n - 1, 1), n}):
        c = np.arange(n + 1)
        got = pass_at_k(np.full(n + 1, n), c, k)
        want = np.array([exact(n, int(ci), k) for ci in c])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"n={n} k={k}")


def test_mixed_n_in_one_call():
    n = np.array([1, 4, 10, 200, 200, 7])
    c = np.array([1, 2, 0, 3, 200, 6])
    for k in (1, 4, 7):
        got = pass_at_k(n, c, k)
        for i in range(len(n)):
            if n[i] < k:
                assert np.isnan(got[i])
            else:
                assert got[i] == pytest.approx(exact(int(n[i]), int(c[i]), k), abs=1e-12)


def test_special_values():
    n = np.array([10, 10, 10])
    assert pass_at_k(n, np.array([0, 0, 0]), 3).tolist() == [0.0, 0.0, 0.0]  # c=0
    assert pass_at_k(n, np.array([10, 10, 10]), 3).tolist() == [1.0, 1.0, 1.0]  # c=n
    np.testing.assert_allclose(pass_at_k(n, np.array([0, 3, 7]), 1), [0.0, 0.3, 0.7])  # k=1 is c/n
    assert pass_at_k(n, np.array([1, 5, 9]), 10).tolist() == [1.0, 1.0, 1.0]  # k=n, any c>0
    assert pass_at_k(n, np.array([8, 9, 8]), 3).tolist() == [1.0, 1.0, 1.0]  # n-c < k


def test_large_n_is_finite_and_accurate():
    n = np.full(5, 200)
    c = np.array([1, 2, 50, 150, 199])
    got = pass_at_k(n, c, 100)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [exact(200, int(ci), 100) for ci in c], atol=1e-12)


def test_monotone_in_c_and_k():
    n = 20
    by_c = pass_at_k(np.full(n + 1, n), np.arange(n + 1), 5)
    assert np.all(np.diff(by_c) >= -1e-15)
    by_k = [float(pass_at_k(np.array([n]), np.array([3]), k)[0]) for k in range(1, n + 1)]
    assert np.all(np.diff(by_k) >= -1e-15)


def test_n_smaller_than_k_is_nan():
    got = pass_at_k(np.array([3, 5, 8]), np.array([1, 5, 2]), 6)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert got[2] == pytest.approx(exact(8, 2, 6))


def test_empty_and_list_input():
    assert pass_at_k(np.array([], dtype=int), np.array([], dtype=int), 1).shape == (0,)
    assert pass_at_k([4, 4], [1, 2], 2).tolist() == pytest.approx([exact(4, 1, 2), exact(4, 2, 2)])


@pytest.mark.parametrize("n, c, k", [([3], [4], 1), ([3], [-1], 1), ([3], [1], 0), ([3], [1], -2), ([-1], [0], 1)])
def test_invalid_input_raises(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(np.array(n), np.array(c), k)
