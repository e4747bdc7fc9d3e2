"""The unbiased pass@k estimator, 1 - C(n-c, k) / C(n, k), vectorised over prompts."""

from __future__ import annotations

import numpy as np


def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Per-prompt pass@k for n samples with c correct. Prompts with n < k get NaN.

    C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i), computed as a difference of prefix
    sums of log(1 - k/i), so it never overflows and needs no per-prompt loop.
    """
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if k < 1:
        raise ValueError("k must be >= 1")
    if np.any(c > n) or np.any(c < 0):
        raise ValueError("need 0 <= c <= n")
    top = int(n.max(initial=0))
    i = np.arange(top + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(i > k, np.log1p(-k / np.maximum(i, 1)), 0.0)
    prefix = np.cumsum(terms)  # prefix[m] = sum_{i=k+1..m} log(1 - k/i)
    fail = n - c
    ratio = np.where(fail >= k, np.exp(prefix[n] - prefix[np.maximum(fail, 0)]), 0.0)
    return np.where(n >= k, 1.0 - ratio, np.nan)
