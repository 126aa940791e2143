"""pass@k (the HumanEval paper's unbiased estimator) and n@k with example-test filtering."""

from __future__ import annotations

from math import comb

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples, drawn without replacement from n samples of
    which c are correct, is correct: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021), computed as
    a stable product. Requires ``n >= k``."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def n_at_k(n_total: int, n_example_pass: int, n_both_pass: int, n: int, k: int) -> float:
    """Expected n@k (AlphaCode; CodeRL's critic sampling without the critic's ranking).

    Draw k of the ``n_total`` samples; keep those that pass the example tests; submit n of them
    (chosen at random among the kept ones); solved if a submitted one passes the hidden tests.
    ``n_example_pass`` samples pass the example tests, ``n_both_pass`` of them also pass the
    hidden tests. Exact: the kept samples are a uniform subset of the example-passing ones, their
    number f is hypergeometric, and the submitted ``min(n, f)`` are a uniform subset too.
    """
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
