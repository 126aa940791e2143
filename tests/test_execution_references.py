"""The engine against real references: HumanEval canonical solutions, MBPP reference programs, the
APPS sample's gold solutions, and the outcomes CodeRL's own harness recorded for 83 sampled programs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from coderl.execution import ExecConfig, Executor, outcome_from_code
from coderl.problems import load_problems

pytestmark = pytest.mark.timeout(300)
APPS = Path(__file__).resolve().parents[1] / "data" / "apps-sample"

# MBPP reference programs that do not pass their own test_list on CPython 3.11 (checked by hand):
MBPP_KNOWN = {
    "mbpp/123": "slow: amicable_numbers_sum(9999) takes ~5 s, over the 4 s per-test limit",
    "mbpp/596": "sys.getsizeof of a tuple differs from the recorded 104/88 bytes on CPython 3.11",
    "mbpp/642": "compares a set of tuple(set(...)) whose element order differs on CPython 3.11",
}


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecConfig()) as executor:
        yield executor


def test_humaneval_canonical_solutions_all_pass(ex):
    problems = load_problems("humaneval")
    assert len(problems) == 164
    results = ex.run_many([(p, p.solutions[0], "hidden") for p in problems])
    failing = {p.id: (r.outcome, r.error_type, r.error_message) for p, r in zip(problems, results) if r.outcome != "passed"}
    assert failing == {}


def test_mbpp_reference_programs_pass_test_list(ex):
    problems = [p for split in ("prompt", "train", "validation", "test") for p in load_problems("mbpp", split=split)]
    assert len(problems) == 974
    only_test_list = []
    for p in problems:
        n = len(p.tests["asserts"]) - p.meta.get("num_challenge_tests", 0)
        only_test_list.append(dataclasses.replace(p, tests=dict(p.tests, asserts=p.tests["asserts"][:n])))
    results = ex.run_many([(p, p.solutions[0], "hidden") for p in only_test_list])
    failing = {p.id: (r.outcome, r.detail) for p, r in zip(only_test_list, results) if r.outcome != "passed"}
    # a loaded machine can push a fast program past 4 s: timeouts get one rerun with a generous limit
    with Executor(ExecConfig(timeout=30)) as patient:
        for p in only_test_list:
            if p.id in failing and failing[p.id][1] == "timeout":
                r = patient.run(p, p.solutions[0])
                if p.id == "mbpp/123":
                    assert r.outcome == "passed"  # correct, only slow
                else:
                    failing.pop(p.id) if r.outcome == "passed" else None
    assert set(failing) == set(MBPP_KNOWN), failing
    assert failing["mbpp/123"] == ("runtime_error", "timeout")
    assert failing["mbpp/596"][0] == failing["mbpp/642"][0] == "failed"


def test_apps_gold_solutions_pass(ex):
    problems = load_problems("apps", path=APPS, split="train")
    items = [(p, s, "hidden") for p in problems for s in p.solutions]
    results = ex.run_many(items)
    failing = [(it[0].id, r.outcome, r.error_message) for it, r in zip(items, results) if r.outcome != "passed"]
    assert failing == []
    assert len(items) == 101


def test_apps_recorded_outcomes_of_codeRL_harness_reproduced(ex):
    """gen_solutions.json holds CodeRL's recorded label of 83 sampled programs; all 83 agree."""
    problems = load_problems("apps", path=APPS, split="train")
    items, want = [], []
    for p in problems:
        for g in json.loads((APPS / "train" / p.id.split("/")[-1] / "gen_solutions.json").read_text()):
            items.append((p, g["code"], "hidden"))
            want.append(outcome_from_code(g["result"]))
    assert len(items) == 83
    got = [r.outcome for r in ex.run_many(items)]
    disagreements = [(it[0].id, i, w, g) for i, (it, w, g) in enumerate(zip(items, want, got)) if w != g]
    assert disagreements == []
