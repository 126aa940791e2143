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

# MBPP reference programs that do not pass their own test_list on CPython 3.11 (checked by hand),
# for reasons that do not depend on the machine:
MBPP_KNOWN = {
    "mbpp/596": "sys.getsizeof of a tuple differs from the recorded 104/88 bytes on CPython 3.11",
    "mbpp/642": "compares a set of tuple(set(...)) whose element order differs on CPython 3.11",
}
# Correct but slow: whether it fits CodeRL's 4 s per test depends on the machine (~5 s on a loaded
# 2-core box, under 4 s on a fast one), so no test pins its verdict under 4 s.
MBPP_SLOW = {"mbpp/123": "amicable_numbers_sum(9999) takes seconds"}

# Gold programs are checked for correctness, not speed: under a per-test limit no machine reaches
# (a timeout there is a real hang, not a slow machine).
PATIENT = 60.0


@pytest.fixture(scope="module")
def ex():
    """CodeRL's limits (4 s per test): for programs whose recorded verdict is a timeout."""
    with Executor(ExecConfig()) as executor:
        yield executor


@pytest.fixture(scope="module")
def patient():
    """Reference programs: a limit where every correct one passes on any machine."""
    with Executor(ExecConfig(timeout=PATIENT)) as executor:
        yield executor


def test_humaneval_canonical_solutions_all_pass(patient):
    problems = load_problems("humaneval")
    assert len(problems) == 164
    results = patient.run_many([(p, p.solutions[0], "hidden") for p in problems])
    failing = {p.id: (r.outcome, r.error_type, r.error_message) for p, r in zip(problems, results) if r.outcome != "passed"}
    assert failing == {}


def test_mbpp_reference_programs_pass_test_list(patient):
    problems = [p for split in ("prompt", "train", "validation", "test") for p in load_problems("mbpp", split=split)]
    assert len(problems) == 974
    only_test_list = []
    for p in problems:
        n = len(p.tests["asserts"]) - p.meta.get("num_challenge_tests", 0)
        only_test_list.append(dataclasses.replace(p, tests=dict(p.tests, asserts=p.tests["asserts"][:n])))
    results = patient.run_many([(p, p.solutions[0], "hidden") for p in only_test_list])
    by_id = {p.id: r for p, r in zip(only_test_list, results)}
    failing = {pid: (r.outcome, r.detail) for pid, r in by_id.items() if r.outcome != "passed"}
    assert set(failing) == set(MBPP_KNOWN), failing
    assert failing["mbpp/596"] == failing["mbpp/642"] == ("failed", None)  # a wrong value, not a crash
    assert all(by_id[pid].outcome == "passed" for pid in MBPP_SLOW)  # correct, only slow


def test_apps_gold_solutions_pass(patient):
    problems = load_problems("apps", path=APPS, split="train")
    items = [(p, s, "hidden") for p in problems for s in p.solutions]
    results = patient.run_many(items)
    failing = [(it[0].id, r.outcome, r.error_message) for it, r in zip(items, results) if r.outcome != "passed"]
    assert failing == []
    assert len(items) == 101


def test_apps_recorded_outcomes_of_codeRL_harness_reproduced(ex):
    """gen_solutions.json holds CodeRL's recorded label of 83 sampled programs; all 83 agree.
    The four recorded timeouts (2287 #40, 4184 #75, #78, #82) are infinite loops (a loop whose
    variable never changes: still running after 20 s), so their verdict under 4 s holds on any
    machine; every other program ends in well under a second."""
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
