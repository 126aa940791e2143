"""Per-problem statistics of a run and paired-bootstrap comparisons between runs.

Every metric is a ratio of sums over problems, ``sum(num) / sum(den)``, with one ``(num, den)``
pair per problem:

* ``greedy_pass@1``: (greedy program passed, 1) for problems with a greedy result;
* ``pass@k``: (unbiased pass@k estimate, 1) for problems with at least k sampled programs;
* ``n@k``: (expected n@k with example-test filtering, 1), likewise;
* ``hack_rate``: (programs passing the example tests but failing a hidden one, programs passing
  the example tests): the share a user would wrongly accept (no example tests: not counted).

A *paired bootstrap* resamples the problems both runs hold (the same resample for both),
recomputes both metrics, and takes the 2.5th and 97.5th percentiles of the difference ``b - a``:
an interval that holds 0 says the runs do not differ beyond what the choice of problems explains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from .metrics import n_at_k, pass_at_k


@dataclass
class ProblemStats:
    """What one run says about one problem (all a comparison needs; small enough to store)."""

    n: int = 0                       # sampled programs with a result
    c: int = 0                       # ... passing the hidden tests
    e: int = 0                       # ... passing the example tests (no example tests: all)
    ec: int = 0                      # ... passing both
    greedy: bool | None = None       # the greedy program passed (None: no greedy result)
    greedy_outcome: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)  # sampled programs per outcome
    ex_pass: int = 0                 # programs (sampled + greedy) passing their example tests
    ex_pass_hidden_fail: int = 0     # ... that fail a hidden test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProblemStats":
        return cls(**d)


def problem_stats(problem_ids: Iterable[str], results: Iterable[dict],
                  origins: dict[tuple[str, int], str]) -> tuple[dict[str, ProblemStats], int]:
    """One ProblemStats per problem id; also the number of results of other problems."""
    per = {pid: ProblemStats() for pid in problem_ids}
    unknown = 0
    for r in results:
        pid = str(r["problem_id"])
        st = per.get(pid)
        if st is None:
            unknown += 1
            continue
        origin = origins.get((pid, int(r["index"])), r.get("origin") or "sampled")
        ok = r["outcome"] == "passed"
        ex = r.get("example_passed")
        if ex is True:
            st.ex_pass += 1
            st.ex_pass_hidden_fail += not ok
        if origin == "greedy":
            st.greedy, st.greedy_outcome = ok, r["outcome"]
            continue
        st.n += 1
        st.c += ok
        ex_ok = True if ex is None else bool(ex)
        st.e += ex_ok
        st.ec += ex_ok and ok
        st.outcomes[r["outcome"]] = st.outcomes.get(r["outcome"], 0) + 1
    return per, unknown


# -- metrics as (num, den) per problem ----------------------------------------------------------

def parse_metric(name: str) -> tuple[str, tuple[int, ...]]:
    """``greedy_pass@1`` | ``pass@K`` | ``N@K`` | ``hack_rate`` -> (kind, numbers)."""
    if name in ("greedy_pass@1", "hack_rate"):
        return name, ()
    if name.startswith("pass@"):
        try:
            k = int(name[5:])
        except ValueError:
            raise ValueError(f"metric {name!r}: expected pass@K with an integer K") from None
        if k < 1:
            raise ValueError(f"metric {name!r}: K must be >= 1")
        return "pass@k", (k,)
    n, sep, k = name.partition("@")
    if sep and n.isdigit() and k.isdigit() and 1 <= int(n) <= int(k):
        return "n@k", (int(n), int(k))
    raise ValueError(f"unknown metric {name!r}; expected greedy_pass@1, pass@K, N@K (N <= K) or hack_rate")


def metric_pairs(stats: dict[str, ProblemStats], name: str) -> dict[str, tuple[float, float]]:
    """``{problem_id: (num, den)}`` for the problems where the metric is defined."""
    kind, nums = parse_metric(name)
    out: dict[str, tuple[float, float]] = {}
    for pid, s in stats.items():
        if kind == "greedy_pass@1":
            if s.greedy is not None:
                out[pid] = (float(s.greedy), 1.0)
        elif kind == "hack_rate":
            out[pid] = (float(s.ex_pass_hidden_fail), float(s.ex_pass))
        elif kind == "pass@k":
            if s.n >= nums[0]:
                out[pid] = (pass_at_k(s.n, s.c, nums[0]), 1.0)
        elif s.n >= nums[1]:
            out[pid] = (n_at_k(s.n, s.e, s.ec, nums[0], nums[1]), 1.0)
    return out


def ratio(pairs: dict[str, tuple[float, float]]) -> float | None:
    num = sum(p[0] for p in pairs.values())
    den = sum(p[1] for p in pairs.values())
    return num / den if den else None


def bootstrap_interval(pairs: dict[str, tuple[float, float]], *, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of one run's metric, resampling problems."""
    if not pairs:
        return None
    arr = np.array(list(pairs.values()), dtype=float)
    return _percentiles(_resampled(arr, _draws(len(arr), resamples, seed)), level)


@dataclass
class Difference:
    metric: str
    a: float | None
    b: float | None
    diff: float | None            # b - a on the common problems
    low: float | None             # 95% paired-bootstrap interval of b - a
    high: float | None
    problems: int                 # problems both runs define the metric on

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["significant"] = self.significant
        return d


def paired_bootstrap(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]], *,
                     metric: str = "", resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> Difference:
    """``b - a`` of a ratio metric over the problems both hold, with its paired bootstrap interval."""
    common = sorted(set(a) & set(b))
    if not common:
        return Difference(metric, None, None, None, None, None, 0)
    A = np.array([a[p] for p in common], dtype=float)
    B = np.array([b[p] for p in common], dtype=float)
    va, vb = _ratio1(A), _ratio1(B)
    idx = _draws(len(common), resamples, seed)
    ci = _percentiles(_resampled(B, idx) - _resampled(A, idx), level)
    diff = None if va is None or vb is None else vb - va
    return Difference(metric, va, vb, diff, ci[0] if ci else None, ci[1] if ci else None, len(common))


def compare_stats(a: dict[str, ProblemStats], b: dict[str, ProblemStats], metrics: list[str], *,
                  resamples: int = 1000, seed: int = 0) -> list[Difference]:
    return [paired_bootstrap(metric_pairs(a, m), metric_pairs(b, m), metric=m,
                             resamples=resamples, seed=seed) for m in metrics]


def available_metrics(stats: dict[str, ProblemStats], ks: Iterable[int] = (1, 5, 10, 100),
                      n_at_k_: Iterable[str] = ("1@10",)) -> list[str]:
    """The metrics a run's programs allow (greedy pass@1, pass@k, n@k, the hack rate)."""
    out = []
    if any(s.greedy is not None for s in stats.values()):
        out.append("greedy_pass@1")
    max_n = max((s.n for s in stats.values()), default=0)
    out += [f"pass@{k}" for k in ks if 1 <= k <= max_n]
    out += [m for m in n_at_k_ if parse_metric(m)[1][1] <= max_n]
    if any(s.ex_pass for s in stats.values()):
        out.append("hack_rate")
    return out


def _ratio1(arr: np.ndarray) -> float | None:
    den = arr[:, 1].sum()
    return float(arr[:, 0].sum() / den) if den else None


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _resampled(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The ratio metric of each resample ``idx`` of ``arr``'s (num, den) rows (NaN: den 0)."""
    num, den = arr[idx, 0].sum(1), arr[idx, 1].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _percentiles(vals: np.ndarray, level: float) -> tuple[float, float] | None:
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    return float(lo), float(hi)
