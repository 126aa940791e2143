"""pass@k (the HumanEval paper's unbiased estimator) and n@k with example-test filtering."""

from __future__ import annotations

from math import comb

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn from n, c of them correct, is correct):
    ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021) as a stable product. Requires ``n >= k``."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def n_at_k(n_total: int, n_example_pass: int, n_both_pass: int, n: int, k: int) -> float:
    """Expected n@k (AlphaCode; CodeRL's critic sampling without the ranking): of k drawn samples,
    keep those passing the example tests (``n_example_pass`` of all, ``n_both_pass`` of them
    also the hidden ones), submit n at random. Exact (the kept number is hypergeometric)."""
    N, e, p = n_total, n_example_pass, n_both_pass
    if k > N:
        raise ValueError(f"{n}@{k} needs at least {k} samples, got {N}")
    if not (0 <= p <= e <= N):
        raise ValueError(f"n@k: need 0 <= both-pass ({p}) <= example-pass ({e}) <= total ({N})")
    total = comb(N, k)
    fail = 0.0
    for f in range(max(0, k - (N - e)), min(k, e) + 1):
        prob_f = comb(e, f) * comb(N - e, k - f) / total
        s = min(n, f)
        fail += prob_f * (comb(e - p, s) / comb(e, s))
    return float(1.0 - fail)
