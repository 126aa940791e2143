"""Critic sampling's last step: choose the programs to submit, then report what they solved.

Per problem the candidates are its programs that pass the example tests, ranked by the critic's
P(passed), then by mean token log-probability; where none passes, or the problem has no example
test, every program is a candidate (ranked the same way). The first ``n`` are submitted.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..execution.codes import PASSED
from ..io import atomic_write_text

FILE = "submissions.jsonl"


def _mean_logprob(s) -> float:
    return (s.logprob or 0.0) / max(1, s.num_tokens)


def choose(state, n: int) -> list[dict[str, Any]]:
    """One record per problem: ``submitted`` (indices, best first), ``basis`` (examples: among
    example-passing programs; critic: no example test; none-passed: none passed them)."""
    out = []
    for pid, samples in state.samples.items():
        passing = [s for s in samples if state.passes_examples(s.key)]
        if not state.has_examples(pid):
            pool, basis = samples, "critic"
        elif passing:
            pool, basis = passing, "examples"
        else:
            pool, basis = samples, "none-passed"
        ranked = sorted(pool, key=lambda s: (-state.scores[s.key][0], -_mean_logprob(s), s.index))
        out.append({"problem_id": pid, "submitted": [s.index for s in ranked[:n]], "basis": basis,
                    "candidates": len(pool),
                    "p_pass": [round(state.scores[s.key][0], 4) for s in ranked[:n]]})
    return out


def write(path: Path, subs: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(d) + "\n" for d in subs))


def report(problems, state, subs: list[dict], hidden: list[dict], cfg, *, seconds: float,
           models) -> dict[str, Any]:
    """Per problem: solved by the first n submitted (n@budget, for n in 1 and ``cfg.submit``),
    solved by any program (pass@budget), programs, tokens; and where the budget went: per round
    and origin, programs, tokens, how many passed the example tests, and how many of those the
    hidden ones."""
    passed = {(r["problem_id"], r["index"]) for r in hidden if r["outcome"] == PASSED}
    ns = sorted({1, cfg.submit})
    per_problem, budget = {}, defaultdict(Counter)
    for sub in subs:
        pid = sub["problem_id"]
        samples = state.samples[pid]
        per_problem[pid] = {
            **{f"{n}@{cfg.budget}": any((pid, i) in passed for i in sub["submitted"][:n]) for n in ns},
            f"pass@{cfg.budget}": any(s.key in passed for s in samples),
            "programs": len(samples), "tokens": sum(s.num_tokens for s in samples),
            "basis": sub["basis"]}
        for s in samples:
            c = budget[f"round {s.meta.get('round', 0)} {s.origin}"]
            ex = state.passes_examples(s.key)
            c.update(programs=1, tokens=s.num_tokens, example_passed=int(ex),
                     example_and_hidden_passed=int(ex and s.key in passed), hidden_passed=int(s.key in passed))
    m = len(per_problem) or 1
    ex_pass = sum(c["example_passed"] for c in budget.values())
    hacked = ex_pass - sum(c["example_and_hidden_passed"] for c in budget.values())
    summary = {**{k: round(100 * sum(p[k] for p in per_problem.values()) / m, 2)
                  for k in [f"{n}@{cfg.budget}" for n in ns] + [f"pass@{cfg.budget}"]},
               "problems": len(per_problem), "budget": cfg.budget,
               "programs": sum(p["programs"] for p in per_problem.values()),
               "tokens": sum(p["tokens"] for p in per_problem.values()),
               "hack_rate": round(100 * hacked / ex_pass, 2) if ex_pass else None,
               "seconds": round(seconds, 1)}
    return {"summary": summary, "settings": {k: v for k, v in vars(cfg).items() if k != "progress"},
            "models": {"actor": models.actor_spec, "critic": str(models.critic_path),
                       "critic_classes": models.critic.num_classes, "repair": models.repair_spec},
            "bases": dict(Counter(s["basis"] for s in subs)),
            "budget_use": {k: dict(v) for k, v in sorted(budget.items())},
            "rounds": state.rounds, "per_problem": per_problem}


def render(rep: dict[str, Any]) -> str:
    s, st = rep["summary"], rep["settings"]
    lines = ["# critic sampling", "",
             f"{s['problems']} problems of {st['source']} ({st['split']}), budget {s['budget']} programs "
             f"per problem ({st['first']} first, {st['rounds']} round(s) of refine={st['refine']} / "
             f"repair={st['repair']}), submit {st['submit']}; actor {rep['models']['actor']}, critic "
             f"{rep['models']['critic']} ({rep['models']['critic_classes']} classes).", "",
             "| metric | % |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in s.items() if "@" in k]
    lines += ["", f"Programs {s['programs']}, generated tokens {s['tokens']}, hack rate "
              f"{s['hack_rate']}% (example-passing programs that fail a hidden test), {s['seconds']}s.",
              f"Submission basis per problem: {rep['bases']}.", "",
              "| round / origin | programs | tokens | pass example tests | of those pass hidden | pass hidden |",
              "|---|---|---|---|---|---|"]
    for k, c in rep["budget_use"].items():
        lines.append(f"| {k} | {c.get('programs', 0)} | {c.get('tokens', 0)} | {c.get('example_passed', 0)} | "
                     f"{c.get('example_and_hidden_passed', 0)} | {c.get('hidden_passed', 0)} |")
    return "\n".join(lines) + "\n"
