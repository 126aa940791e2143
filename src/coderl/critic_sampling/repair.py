"""Repair: what a repair model is shown about a failed program, and the pairs it is trained on.

The prompt is the problem's own (same style as generation) with the failed program and the
sandbox's verdict after the task (:func:`feedback`); the target is a program of the same problem
that passes its tests: a passing sample of the actor where there is one (its own style), else a
gold program. ``coderl train-repair`` fine-tunes on these pairs (:mod:`.repair_trainer`);
``critic-sample`` with ``repair: self`` shows the same prompt to the actor itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping, Sequence

from ..execution.codes import COMPILE_ERROR, FAILED, PASSED, RUNTIME_ERROR

MAX_PROGRAM_CHARS = 2000


def failing_test(problem: Any, result: Mapping[str, Any] | None) -> str | None:
    """The first assert the program failed, where the tests are asserts (MBPP, example tests)."""
    if problem is None or not result:
        return None
    tests = problem.example_tests if result.get("tests") == "example" else problem.tests
    asserts = (tests or {}).get("asserts") or []
    for i, v in enumerate(result.get("per_test") or []):
        if v is not True:
            return asserts[i].strip() if i < len(asserts) else None
    return None


def verdict_text(result: Mapping[str, Any] | None, problem: Any = None) -> str:
    """Why a program failed, from its Result (outcome, error type, message, line) and, where the
    tests are asserts, the first one it failed."""
    if not result:
        return "It does not pass the tests."
    test = failing_test(problem, result)
    return (f"On `{test}`: " if test else "") + _verdict(result)


def _verdict(result: Mapping[str, Any]) -> str:
    outcome = result.get("outcome")
    etype, msg, line = result.get("error_type"), (result.get("error_message") or "").strip(), result.get("error_line")
    where = f" (line {line})" if line else ""
    err = f"{etype}: {msg}" if etype and msg else (etype or msg or "")
    err = err.splitlines()[0][:300] if err else ""
    if outcome == COMPILE_ERROR:
        return f"It cannot be loaded{where}: {err}." if err else f"It cannot be loaded{where}."
    if outcome == RUNTIME_ERROR:
        if result.get("detail") == "timeout":
            return "It runs out of time on the tests."
        return f"It raises an error{where}: {err}." if err else f"It crashes on the tests{where}."
    if outcome == FAILED:
        return f"It runs but gives a wrong answer{': ' + err if err else ''}."
    return "It passes the tests."


def feedback(program: str, result: Mapping[str, Any] | None, problem: Any = None) -> str:
    """The text a repair prompt adds after the task."""
    code = program if len(program) <= MAX_PROGRAM_CHARS else program[:MAX_PROGRAM_CHARS] + "\n# ..."
    return (f"This attempt is wrong:\n```python\n{code.rstrip()}\n```\n{verdict_text(result, problem)}\n"
            "Write a correct solution.")


def repair_pairs(problems: Sequence, pairs: Iterable[tuple[Any, Mapping[str, Any]]], *,
                 max_per_problem: int = 4, use_samples: bool = True
                 ) -> tuple[list[tuple[Any, str, str, dict]], dict[str, int]]:
    """``[(problem, feedback, target program, info)]`` from executed samples ``pairs`` (sample,
    result): each failed program of a problem (at most ``max_per_problem``, distinct programs, in
    sample order) with a passing program of the same problem, passing samples first (in turn),
    then gold programs. Problems with no passing program are skipped (counted)."""
    by_id = {str(p.id): p for p in problems}
    failed: dict[str, list] = defaultdict(list)
    passing: dict[str, list[str]] = defaultdict(list)
    for s, r in pairs:
        if s.problem_id not in by_id or s.origin == "gold":
            continue
        if r["outcome"] == PASSED:
            if use_samples and s.program not in passing[s.problem_id]:
                passing[s.problem_id].append(s.program)
        elif all(s.program != f.program for f, _ in failed[s.problem_id]):
            failed[s.problem_id].append((s, r))
    out, counts = [], Counter()
    for pid, fails in failed.items():
        targets = passing[pid] + [g for g in by_id[pid].solutions if isinstance(g, str) and g.strip()]
        if not targets:
            counts["problems_without_a_passing_program"] += 1
            continue
        for i, (s, r) in enumerate(fails[:max_per_problem]):
            target = targets[i % len(targets)]
            kind = "sample" if i % len(targets) < len(passing[pid]) else "gold"
            counts[f"target_{kind}"] += 1
            out.append((by_id[pid], feedback(s.program, r, by_id[pid]), target,
                        {"problem_id": pid, "index": s.index, "outcome": r["outcome"], "target": kind}))
    counts["pairs"] = len(out)
    counts["problems"] = len({info["problem_id"] for *_, info in out})
    return out, dict(counts)
