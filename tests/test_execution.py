"""Execution engine: outcomes, rewards, wire encoding, comparison rules, harnesses, cache, stage, CLI."""

from __future__ import annotations

import json
import math
import time

import pytest

from coderl.execution import ExecConfig, Executor, Result, Rewards, outcome_from_code
from coderl.execution import compare, wire
from coderl.execution.cache import ResultCache
from coderl.execution.outcome import aggregate
from coderl.execution.stage import execute
from coderl.io import RecordError, read_jsonl
from coderl.problems.schema import Problem

pytestmark = pytest.mark.timeout(120)

ADD = Problem(id="t/add", source="mbpp", question="add", kind="assert", entry_point="add",
              tests={"setup": "", "asserts": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"],
                     "check": None},
              example_tests={"setup": "", "asserts": ["assert add(1, 2) == 3"], "check": None})
STDIO = Problem(id="t/sum", source="apps", question="sum", kind="stdio",
                tests={"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
CALL = Problem(id="t/call", source="apps", question="pair", kind="call", entry_point="f",
               tests={"fn_name": "f", "inputs": [[1, 2], [3, 4]], "outputs": [[1, 2], [[3, 4]]]})
CHECK = Problem(id="t/check", source="humaneval", question="q", kind="assert", entry_point="inc",
                tests={"setup": "", "asserts": [],
                       "check": "import math\ndef check(candidate):\n    assert candidate(1) == 2\n"
                                "    assert math.isclose(candidate(0.5), 1.5)\n    assert helper() == 7\n"})


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecConfig(workers=2, timeout=2.0)) as executor:
        yield executor


# -- records and rewards ----------------------------------------------------------------------
def test_outcome_codes_and_critic_classes():
    assert [outcome_from_code(c) for c in (-2, -1, False, True)] == ["compile_error", "runtime_error", "failed", "passed"]
    r = Result(problem_id="p", index=0, outcome="runtime_error", detail="timeout")
    assert (r.code, r.critic_class) == (-1, 1)
    assert Result.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert aggregate([True, False, -1]) == "runtime_error" and aggregate([True, False]) == "failed"
    assert aggregate([True, True]) == "passed" and aggregate([-2]) == "compile_error"
    with pytest.raises(ValueError):
        Result(problem_id="p", index=0, outcome="bogus")


def test_rewards_coderl_and_rltf():
    mk = lambda o, k=0, n=4: Result(problem_id="p", index=0, outcome=o, tests_passed=k, tests_total=n)  # noqa: E731
    coderl = Rewards()
    assert [coderl.reward(mk(o)) for o in ("compile_error", "runtime_error", "failed", "passed")] == [-1.0, -0.6, -0.3, 1.0]
    rltf = Rewards(partial_credit=True)
    assert math.isclose(rltf.reward(mk("failed", 2, 4)), -0.3 + 1.3 * 0.5)
    assert rltf.reward(mk("runtime_error", 2, 4)) == -0.6
    assert coderl.reward(mk("passed").to_dict()) == 1.0


# -- wire and comparison ------------------------------------------------------------------------
def test_wire_roundtrip_and_hostile_values():
    v = {"a": (1, 2.5, None, {3}, frozenset({4})), "b": [b"x", 1j, float("inf")], 5: "s", "t": int}
    assert wire.decode(wire.encode(v, {})) == v
    assert math.isnan(wire.decode(wire.encode(float("nan"), {})))

    class Yes:
        def __eq__(self, other):
            return True

    handles: dict = {}
    h = wire.decode(wire.encode(Yes(), handles))
    assert isinstance(h, wire.Handle) and h != 3 and not (h == 3) and handles[h.id].__class__ is Yes

    class I(int):
        def __eq__(self, other):
            return True

    assert type(wire.decode(wire.encode(I(5), {}))) is int
    for bad in ({"$zz": 1}, {"$t": 5}, {"$h": "x"}, {"a": 1, "b": 2, "c": 3}, {"$bi": "open"}):
        with pytest.raises(wire.ProtocolError):
            wire.decode(bad)


def test_apps_stdio_comparison_rules():
    assert compare.stdio_equal("3\n", "3\n") and compare.stdio_equal("  3  \n\n", "3")
    assert compare.stdio_equal("1 2\n3\n", ["1 2", "3"])
    assert compare.stdio_equal("1.0000001\n", "1.0\n")        # float tolerance
    assert compare.stdio_equal("b a\n", "a b\n")               # APPS compares word sets per line
    assert compare.stdio_equal("0.3333\n", "0.333333\n")       # rounded to 3 decimals
    assert not compare.stdio_equal("4\n", "3\n")
    assert not compare.stdio_equal("", "3\n")


def test_apps_call_comparison_rules():
    assert compare.call_equal((1, 2), [1, 2])                  # tuples become lists
    assert compare.call_equal(5, [5])                          # wrapped in a list or not
    assert compare.call_equal([(1, 2)], [[[1, 2]]])
    assert compare.call_equal({1: 2}, {"1": 2})                # JSON string keys
    assert not compare.call_equal(5, [6])
    assert not compare.call_equal(wire.Handle(1, "Yes"), 5)


# -- harnesses ------------------------------------------------------------------------------------
def test_assert_problem_outcomes(ex):
    assert ex.run(ADD, "def add(a, b):\n    return a + b\n").outcome == "passed"
    r = ex.run(ADD, "def add(a, b):\n    return a * b\n", early_exit=False)
    assert (r.outcome, r.per_test, r.tests_passed, r.tests_total) == ("failed", [False, True, True], 2, 3)
    r = ex.run(ADD, "def add(a, b)\n    return a\n")
    assert (r.outcome, r.error_type, r.error_line) == ("compile_error", "SyntaxError", 1)
    r = ex.run(ADD, "x = 1\ny = undefined_name\ndef add(a, b):\n    return a + b\n")
    assert (r.outcome, r.error_type, r.error_line) == ("compile_error", "NameError", 2)  # CodeRL: load failure
    r = ex.run(ADD, "def add(a, b):\n    x = [1]\n    return x[5]\n")
    assert (r.outcome, r.error_type, r.error_line) == ("runtime_error", "IndexError", 3)
    r = ex.run(ADD, "def plus(a, b):\n    return a + b\n")
    assert (r.outcome, r.error_type) == ("runtime_error", "NameError")


def test_example_tests_and_early_exit(ex):
    r = ex.run(ADD, "def add(a, b):\n    return 3\n", tests="example")
    assert (r.outcome, r.tests_total, r.tests) == ("passed", 1, "example")
    # assert/call problems stop at the first runtime error only (CodeRL's trick as released)
    r = ex.run(ADD, "def add(a, b):\n    return a * b if a else 1 // a\n")
    assert r.per_test == [False, True, -1] and r.outcome == "runtime_error"


def test_humaneval_check_with_program_helpers(ex):
    prog = "def helper():\n    return 7\n\ndef inc(x):\n    return x + 1\n"
    assert ex.run(CHECK, prog).outcome == "passed"
    assert ex.run(CHECK, prog.replace("x + 1", "x + 2")).outcome == "failed"


def test_stdio_problem(ex):
    assert ex.run(STDIO, "a, b = map(int, input().split())\nprint(a + b)\n").outcome == "passed"
    assert ex.run(STDIO, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\nexit()\n").outcome == "passed"
    assert ex.run(STDIO, "print(open(0).read().split()[0])\n").outcome == "failed"
    r = ex.run(STDIO, "a = input()\nprint(a[100])\n")
    assert (r.outcome, r.error_type, r.error_line) == ("runtime_error", "IndexError", 2)
    # APPS programs get CodeRL's import block (Counter, np, ...) in their globals
    assert ex.run(STDIO, "print(sum(Counter(map(int, input().split())).keys()))\n").outcome == "passed"
    # top-level return: legal under CodeRL's def-code() wrapping, so legal here too
    assert ex.run(STDIO, "a, b = map(int, input().split())\nprint(a + b)\nreturn\n").outcome == "passed"


def test_call_problem_function_and_leetcode_class(ex):
    assert ex.run(CALL, "def f(a, b):\n    return (a, b)\n").outcome == "passed"
    leet = "class Solution:\n    def f(self, a: int, b: int) -> List[int]:\n        return [a, b]\n"
    assert ex.run(CALL, leet).outcome == "passed"
    assert ex.run(CALL, "def f(a, b):\n    return [b, a]\n").outcome == "failed"


def test_mbpp_setup_code_and_program_objects(ex):
    problem = Problem(id="t/tree", source="mbpp", question="q", kind="assert", entry_point="depth",
                      tests={"setup": "root = Node(1)\nroot.left = Node(2)\n",
                             "asserts": ["assert depth(root) == 2", "assert Pair(1, 2) == Pair(1, 2)"], "check": None})
    prog = ("class Node:\n    def __init__(self, v):\n        self.v, self.left, self.right = v, None, None\n"
            "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(n.right))\n"
            "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
            "    def __eq__(self, o):\n        return (self.a, self.b) == (o.a, o.b)\n")
    assert ex.run(problem, prog).outcome == "passed"


def test_cache_hits_skip_execution(tmp_path):
    cfg = ExecConfig(workers=1, cache_path=str(tmp_path / "cache.sqlite"))
    with Executor(cfg) as e:
        first = e.run(ADD, "def add(a, b):\n    return a + b\n")
        again = e.run(ADD, "def add(a, b):\n    return a + b\n", index=7)
        other = e.run(ADD, "def add(a, b):\n    return b + a\n")
        assert (first.cached, again.cached, other.cached) == (False, True, False)
        assert again.index == 7 and again.hash == first.hash and again.outcome == "passed"
        assert e.cache.hits == 1 and len(e.cache) == 2
    assert len(ResultCache(tmp_path / "cache.sqlite")) == 2


# -- the stage ------------------------------------------------------------------------------------
def _write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_execute_stage_writes_and_resumes(tmp_path):
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    rows = [{"problem_id": "t/add", "index": i, "program": p, "origin": "sampled"}
            for i, p in enumerate(["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return 3\n", "def add("])]
    rows.append({"problem_id": "t/sum", "index": 0, "program": "print(sum(map(int, input().split())))\n", "origin": "gold"})
    _write_samples(samples, rows)
    cfg = ExecConfig(workers=2)
    summary = execute([ADD, STDIO], samples, results, cfg, progress=False)
    assert summary["outcomes"] == {"compile_error": 1, "runtime_error": 0, "failed": 1, "passed": 2}
    recs = sorted(read_jsonl(results), key=lambda r: (r["problem_id"], r["index"]))  # problems land as they finish
    assert [(r["problem_id"], r["index"], r["outcome"]) for r in recs] == [
        ("t/add", 0, "passed"), ("t/add", 1, "failed"), ("t/add", 2, "compile_error"), ("t/sum", 0, "passed")]
    assert [r["example_passed"] for r in recs] == [True, True, False, None]
    assert recs[3]["origin"] == "gold" and (results.parent / "results.jsonl.summary.json").exists()
    # a killed run: keep the first problem only, plus a torn line; the rerun does the rest
    results.write_text("".join(json.dumps(r) + "\n" for r in recs[:3]) + '{"problem_id": "t/s')
    summary = execute([ADD, STDIO], samples, results, cfg, progress=False)
    assert (summary["skipped_already_done"], summary["executed"]) == (3, 1)
    assert sorted((r["problem_id"], r["index"]) for r in read_jsonl(results)) == [
        ("t/add", 0), ("t/add", 1), ("t/add", 2), ("t/sum", 0)]


@pytest.mark.parametrize("line, message", [
    ('{"problem_id": "nope", "index": 0, "program": "x"}', "unknown problem_id 'nope'"),
    ('{"problem_id": "t/add", "program": "x"}', "no 'index' field"),
    ('{"problem_id": "t/add", "index": "0", "program": "x"}', "'index' must be int"),
    ('{"problem_id": "t/add", "index": 0, "program": "x"', "malformed JSON"),
])
def test_execute_stage_bad_samples_name_file_and_record(tmp_path, line, message):
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"problem_id": "t/add", "index": 9, "program": "x"}\n' + line + "\n")
    with pytest.raises(RecordError) as e:
        execute([ADD], samples, tmp_path / "r.jsonl", ExecConfig(workers=1), progress=False)
    assert str(samples) in str(e.value) and message in str(e.value)
    assert ("record 2" in str(e.value)) or (":2" in str(e.value))


def test_cli_execute(tmp_path):
    from typer.testing import CliRunner

    from coderl.cli import app

    samples = tmp_path / "s.jsonl"
    _write_samples(samples, [{"problem_id": "mbpp/11", "index": 0, "origin": "gold",
                              "program": "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n"
                                         "    return s if i < 0 else s[:i] + s[i + 1:]\n"}])
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["execute", "--problems", "mbpp", "--split", "test", "--samples", str(samples),
                                   "--out", str(out), "--workers", "1", "--cache", str(tmp_path / "c.sqlite")])
    assert res.exit_code == 0, res.output
    assert "passed" in res.output and "cache hit rate" in res.output
    assert [r["outcome"] for r in read_jsonl(out)] == ["passed"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "zzz", "index": 0, "program": "x"}\n')
    res = CliRunner().invoke(app, ["execute", "--problems", "mbpp", "--samples", str(bad), "--out", str(tmp_path / "r2.jsonl")])
    assert res.exit_code == 2 and "unknown problem_id" in res.output


def test_engine_replaces_a_dead_worker():
    with Executor(ExecConfig(workers=1)) as e:
        assert e.run(ADD, "def add(a, b):\n    return a + b\n").outcome == "passed"
        w = e._workers[0]
        w.kill()  # the worker dies between programs
        r = e.run(ADD, "def add(a, b):\n    return a + b\n")
        assert r.outcome == "passed" and w.proc is not None and w.proc.poll() is None


GOOD_ADD = "def add(a, b):\n    return a + b\n"


def test_a_failure_after_the_job_was_written_replaces_the_worker(monkeypatch):
    """Whatever goes wrong once a job's bytes may have reached a worker, that worker is replaced: a
    half-fed one would answer the next job with this one's leftovers."""
    from coderl.execution import pool

    real, calls = pool._Worker._exchange, []

    def broken(self, data, job_timeout, wake, cancel):
        calls.append(1)
        if len(calls) == 1:  # half the job written, then a surprise
            wire.send_bytes(self.proc.stdin.fileno(), data[:len(data) // 2])
            raise RuntimeError("surprise")
        return real(self, data, job_timeout, wake, cancel)

    with Executor(ExecConfig(workers=1)) as e:
        [first] = e.worker_pids()
        monkeypatch.setattr(pool._Worker, "_exchange", broken)
        assert e.run(ADD, GOOD_ADD).outcome == "passed"  # on the replacement
        assert e.restarts == 1 and e.worker_pids() != [first] and e.live_workers() == 1
        for _ in range(3):
            assert e.run(ADD, GOOD_ADD).outcome == "passed"


def test_a_cancelled_program_stops_and_its_worker_is_replaced():
    import threading

    from coderl.execution.pool import Cancelled

    with Executor(ExecConfig(workers=1, timeout=30.0)) as e:
        cancel = threading.Event()
        cancel.set()  # before it ran: not started, the worker untouched
        with pytest.raises(Cancelled, match="before it ran"):
            e.run_prepared(ADD, e.job_for(ADD, GOOD_ADD), cancel=cancel)
        assert e.restarts == 0
        cancel, out = threading.Event(), []
        endless = "def add(a, b):\n    while True:\n        pass\n"
        t = threading.Thread(target=lambda: out.append(
            pytest.raises(Cancelled, e.run_prepared, ADD, e.job_for(ADD, endless), cancel=cancel)))
        t.start()
        while e.busy_workers() < 1:  # on the worker (endless: it runs until cancelled, 30 s at most)
            assert t.is_alive()
            time.sleep(0.01)
        cancel.set()
        t.join()
        assert "while it ran" in str(out[0].value) and e.restarts == 1
        assert e.run(ADD, GOOD_ADD).outcome == "passed"


def test_job_options_enter_the_job_only_when_given():
    e = Executor(ExecConfig(workers=1, timeout=2.0))  # (nothing started: jobs are only prepared)
    job, _, key, _ = e.job_for(ADD, GOOD_ADD)
    assert not {"capture", "real_exit"} & set(job) and job["limits"]["memory_mb"] == 2048
    assert job["job_timeout"] == 12.0 and job["limits"]["cpu_seconds"] == 13
    capped, _, key2, _ = e.job_for(ADD, GOOD_ADD, memory_mb=300, max_job_seconds=5, capture=10**9, real_exit=True)
    assert key2 != key and capped["limits"]["memory_mb"] == 300 and job["limits"]["memory_mb"] == 2048
    assert (capped["job_timeout"], capped["limits"]["cpu_seconds"]) == (5, 6)
    assert capped["capture"] == 1024 << 10 and capped["real_exit"] is True  # (at most max_output_kb)
    # the rlimits are built once per RLIMIT_CPU value: as many client timeouts as you like, few entries
    for i in range(2000):
        e.job_for(ADD, GOOD_ADD, timeout=0.001 * (i + 1))
    assert len(e._limits_for) <= ExecConfig().limits.cpu_seconds



def test_fallback_without_namespaces_is_loud_and_labelled():
    with pytest.warns(RuntimeWarning) as warned:
        e = Executor(ExecConfig(workers=1, isolation="none", timeout=1.0))
        e.start()
    assert any("WITHOUT namespaces" in str(w.message) for w in warned)
    try:
        r = e.run(ADD, "def add(a, b):\n    return a + b\n")
        assert r.outcome == "passed" and r.isolation.startswith("rlimits")
        assert not e.guards["bwrap"] and not e.guards["net_namespace"]
        assert e.run(ADD, "def add(a, b):\n    while True:\n        pass\n").detail == "timeout"
    finally:
        e.close()


def test_big_integers_cross_the_wire_and_print(ex):
    big = Problem(id="t/big", source="mbpp", question="q", kind="assert", entry_point="f",
                  tests={"setup": "", "asserts": ["assert f(3000) == __import__('math').factorial(3000)"], "check": None})
    assert ex.run(big, "import math\ndef f(n):\n    return math.factorial(n)\n").outcome == "passed"
    digits = Problem(id="t/digits", source="apps", question="q", kind="stdio",
                     tests={"inputs": ["5000\n"], "outputs": ["1" + "0" * 5000 + "\n"]})
    assert ex.run(digits, "print(10 ** int(input()))\n").outcome == "passed"  # no 4300-digit cap


# -- the config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [
    ({"timeout": "4s"}, "execution.timeout"),                # wrong types are rejected, not coerced
    ({"workers": "two"}, "execution.workers"),
    ({"early_exit": "no"}, "execution.early_exit"),
    ({"timeout": 0}, "execution.timeout"),                   # ranges
    ({"timeout": -1.0}, "execution.timeout"),
    ({"job_timeout": 0}, "execution.job_timeout"),
    ({"workers": -1}, "execution.workers"),
    ({"max_output_kb": 0}, "execution.max_output_kb"),
    ({"isolation": "docker"}, "execution.isolation"),        # choices (docker used to become bwrap)
    ({"time_limit": "auto"}, "execution.time_limit"),
    ({"calibrate_factor": 0.5}, "execution.calibrate_factor"),
    ({"calibrate_floor": 0}, "execution.calibrate_floor"),
])
def test_exec_config_rejects_bad_values_naming_the_key(kwargs, key):
    from coderl.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^{key}: "):
        ExecConfig(**kwargs)
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        ExecConfig.from_dict(kwargs)


@pytest.mark.parametrize("limits, message", [
    ({"memory_mb": 0}, "execution.limits.memory_mb: must be >= 256"),
    ({"memory_mb": 1}, "execution.limits.memory_mb: must be >= 256"),
    ({"memory_mb": "2G"}, "execution.limits.memory_mb: expected int"),
    ({"cpu_seconds": 0}, "execution.limits.cpu_seconds: must be >= 1"),
    ({"max_procs": 1}, "execution.limits.max_procs: must be >= 8"),
    ({"open_files": 3}, "execution.limits.open_files: must be >= 16"),
    ({"file_size_mb": -1}, "execution.limits.file_size_mb: must be >= 1"),
    ({"memory": 512}, "execution.limits: unknown key(s) ['memory']"),
])
def test_exec_config_limits_validated_nested(limits, message):
    from coderl.config import ConfigError
    from coderl.execution import Limits

    with pytest.raises(ConfigError) as e:
        ExecConfig.from_dict({"limits": limits})
    assert str(e.value).startswith(message), str(e.value)
    if "unknown" not in message:
        with pytest.raises(ConfigError, match="^execution.limits."):
            Limits(**limits)


def test_exec_config_from_dict_good_and_unknown_keys():
    from coderl.config import ConfigError
    from coderl.execution import Limits

    cfg = ExecConfig.from_dict({"timeout": 2, "limits": {"memory_mb": 512}, "isolation": "none"})
    assert (cfg.timeout, cfg.limits, cfg.isolation) == (2, Limits(memory_mb=512), "none")
    assert ExecConfig.from_dict(None) == ExecConfig() == ExecConfig.from_dict({})
    with pytest.raises(ConfigError, match=r"^execution: unknown key\(s\) \['timout'\]"):
        ExecConfig.from_dict({"timout": 2})
    with pytest.raises(ConfigError, match="^execution.limits: expected Limits"):
        ExecConfig.from_dict({"limits": "big"})
    with pytest.raises(ConfigError, match="^execution: expected a mapping"):
        ExecConfig.from_dict([1])


def test_exec_config_fields_all_have_help():
    import dataclasses as dc

    from coderl.execution import Limits

    for cls in (ExecConfig, Limits):
        for f in dc.fields(cls):
            assert len(f.metadata.get("help", "")) > 15, (cls.__name__, f.name)


def test_execute_resume_reruns_stale_results(tmp_path):
    """A stored result whose hash is not the one its sample would get now (the program was
    regenerated, the limits changed) is re-executed and replaced, not skipped."""
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    rows = [{"problem_id": "t/add", "index": i, "program": "def add(a, b):\n    return a + b\n", "origin": "sampled"}
            for i in range(3)]
    _write_samples(samples, rows)
    cfg = ExecConfig(workers=1)
    assert execute([ADD], samples, results, cfg, progress=False)["outcomes"]["passed"] == 3
    rows[1]["program"] = "def add(a, b):\n    return a - b\n"  # index 1 regenerated since
    _write_samples(samples, rows)
    summary = execute([ADD], samples, results, cfg, progress=False)
    assert (summary["executed"], summary["stale_reexecuted"], summary["skipped_already_done"]) == (1, 1, 2)
    from coderl.records import read_results

    recs = {r["index"]: r for r in read_results(results)}  # no duplicate keys, no torn line
    assert [recs[i]["outcome"] for i in range(3)] == ["passed", "failed", "passed"]
    # other limits: every stored verdict is stale
    summary = execute([ADD], samples, results, ExecConfig(workers=1, timeout=3.0), progress=False)
    assert (summary["executed"], summary["stale_reexecuted"]) == (3, 3)
    assert len(read_results(results)) == 3
    # same config again: nothing to do
    summary = execute([ADD], samples, results, ExecConfig(workers=1, timeout=3.0), progress=False)
    assert (summary["executed"], summary["stale_reexecuted"], summary["skipped_already_done"]) == (0, 0, 3)


_INTERRUPTED_RUN = """
import signal, sys
# a process started in the background by a non-interactive shell (nohup ... &, some CI runners)
# inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: restore what a
# terminal's Ctrl-C meets
signal.signal(signal.SIGINT, signal.default_int_handler)
from coderl.execution import ExecConfig
from coderl.execution.stage import execute
from coderl.problems.schema import Problem

add = Problem(id="t/add", source="mbpp", question="add", kind="assert", entry_point="add",
              tests={"setup": "", "asserts": ["assert add(1, 2) == 3"], "check": None})
slow = Problem(id="t/slow", source="mbpp", question="f", kind="assert", entry_point="f",
               tests={"setup": "", "asserts": ["assert f(1) == 1"], "check": None})
slow_stdio = Problem(id="t/slow_stdio", source="apps", question="f", kind="stdio",
                     tests={"inputs": ["1\\n"], "outputs": ["1\\n"]})
execute([add, slow, slow_stdio], sys.argv[1], sys.argv[2], ExecConfig(workers=2, timeout=60), progress=False)
"""


def test_execute_stops_promptly_on_ctrl_c(tmp_path):
    """SIGINT to a process running ``execute`` with ten minutes of queued work: it exits within
    seconds, the results file stays valid JSONL with what was done, and no process is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from coderl.records import read_results

    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    rows = [{"problem_id": "t/add", "index": 0, "program": "def add(a, b):\n    return a + b\n"}]
    rows += [{"problem_id": "t/slow", "index": i, "program": f"import time\ndef f(x):\n    time.sleep(60)  # {i}\n"}
             for i in range(6)]
    rows += [{"problem_id": "t/slow_stdio", "index": i, "program": f"import time\ntime.sleep(60)  # {i}\n"}
             for i in range(6)]
    _write_samples(samples, rows)
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_RUN, str(samples), str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (results.exists() and results.read_text().strip()):
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
        time.sleep(1.0)  # the slow programs are running now
        me = psutil.Process(proc.pid)
        spawned = [p for p in me.children(recursive=True)]
        assert len(spawned) >= 2  # the workers (and their zygotes and programs)
        base = 200_000 + (proc.pid % 1_000_000) * 1024  # the engine's program uids start there
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=15)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 5, f"Ctrl-C took {took:.1f} s"
    assert proc.returncode != 0
    recs = read_results(results)  # valid JSONL: no torn line, no engine-error verdicts
    assert [(r["problem_id"], r["outcome"]) for r in recs] == [("t/add", "passed")]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [p for p in spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        strays = [p for p in psutil.process_iter(["uids", "status"]) if p.info["uids"]
                  and base <= p.info["uids"].real < base + 1024 and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not alive and not strays:
            break
        time.sleep(0.1)
    assert alive == [] and strays == []


def test_cache_path_that_cannot_be_a_cache_is_one_line_error(tmp_path):
    import sqlite3

    from coderl.execution.cache import CacheError

    text = tmp_path / "notes.txt"
    text.write_text("not a database, but long enough to have a header " * 20)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE results (id INTEGER, name TEXT)")
    db.commit()
    db.close()
    (tmp_path / "file").write_text("x")
    for path, says in ((tmp_path, "is a directory"), (text, "not a usable SQLite"),
                       (other, "columns ['id', 'name']"), (tmp_path / "file" / "c.sqlite", "cannot create")):
        with pytest.raises(CacheError) as e:
            Executor(ExecConfig(workers=1, cache_path=str(path)))
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and says in msg and "\n" not in msg, msg
        assert isinstance(e.value, ValueError)
    assert text.read_text().startswith("not a database")  # left as it was


# -- calibrated time limits ---------------------------------------------------------------------------
_DOUBLE = {"setup": "", "asserts": ["assert f(2) == 4", "assert f(5) == 10"], "check": None}
FAST = Problem(id="cal/fast", source="mbpp", question="q", kind="assert", entry_point="f", tests=_DOUBLE,
               solutions=["def f(x):\n    return 2 * x\n"])
SLOW_GOLD = Problem(id="cal/slow", source="mbpp", question="q", kind="assert", entry_point="f", tests=_DOUBLE,
                    solutions=["import time\ndef f(x):\n    time.sleep(0.3 if x == 5 else 0)\n    return 2 * x\n"])
WRONG_GOLD = Problem(id="cal/wrong", source="mbpp", question="q", kind="assert", entry_point="f", tests=_DOUBLE,
                     solutions=["def f(x):\n    return 0\n"])
NO_GOLD = Problem(id="cal/none", source="apps", question="q", kind="stdio",
                  tests={"inputs": ["2\n"], "outputs": ["4\n"]})


def test_calibrated_time_limits(tmp_path):
    """limit = min(timeout, max(floor, factor x the gold program's slowest test)); problems without
    a passing gold program keep the fixed timeout; measured once, then read from the file."""
    cfg = ExecConfig(workers=2, timeout=3.0, time_limit="calibrated", calibrate_factor=3.0, calibrate_floor=0.5,
                     calibration_path=str(tmp_path / "calibration.sqlite"))
    with Executor(cfg) as ex:
        limits = ex.calibrate([FAST, SLOW_GOLD, WRONG_GOLD, NO_GOLD])
        gold = ex._gold_seconds  # the measured times (machine-dependent; the rule applied to them is not)
        for pid in ("cal/fast", "cal/slow"):
            assert limits[pid] == round(min(3.0, max(0.5, 3.0 * gold[pid])), 3)
        assert gold["cal/slow"] >= 0.3 and gold["cal/fast"] < gold["cal/slow"]  # its slowest test sleeps 0.3 s
        assert limits["cal/slow"] >= 0.9
        assert limits["cal/wrong"] == limits["cal/none"] == 3.0 and gold["cal/wrong"] is gold["cal/none"] is None
        assert ex.time_limit_summary()["measured"] == 2 and ex.time_limit_summary()["no_passing_gold"] == 2
        loop = "def f(x):\n    while True:\n        pass\n"
        assert ex.job_for(FAST, loop)[0]["timeout"] == limits["cal/fast"]
        r = ex.run(FAST, loop)
        assert (r.outcome, r.detail) == ("runtime_error", "timeout")
        r = ex.run(SLOW_GOLD, SLOW_GOLD.solutions[0].replace("0.3", "0.25"))  # as slow as the gold: fine
        assert r.outcome == "passed"
        calibrated_hash = ex.run(SLOW_GOLD, SLOW_GOLD.solutions[0]).hash
    with Executor(cfg) as ex:  # a second engine reads the measured times back
        assert ex.calibrate([FAST, SLOW_GOLD, WRONG_GOLD, NO_GOLD]) == limits
        assert ex.time_limit_summary()["measured"] == 0 and ex.time_limit_summary()["from_cache"] == 2
    with Executor(ExecConfig(workers=1, timeout=3.0)) as ex:  # the limit used is part of the hash
        assert ex.run(SLOW_GOLD, SLOW_GOLD.solutions[0]).hash != calibrated_hash


def test_calibrated_limits_in_the_stage_and_resume(tmp_path):
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write_samples(samples, [{"problem_id": "cal/fast", "index": 0, "program": "def f(x):\n    return 2 * x\n"},
                             {"problem_id": "cal/fast", "index": 1, "program": "def f(x):\n    while 1:\n        pass\n"}])
    cfg = ExecConfig(workers=2, time_limit="calibrated", calibration_path=str(tmp_path / "calibration.sqlite"))
    summary = execute([FAST], samples, results, cfg, progress=False)
    assert summary["outcomes"]["passed"] == summary["outcomes"]["runtime_error"] == 1
    assert summary["time_limit"]["mode"] == "calibrated" and summary["time_limit"]["measured"] == 1
    assert summary["time_limit"]["median_limit"] < 4.0  # not the fixed limit
    again = execute([FAST], samples, results, cfg, progress=False)  # same limits: nothing stale
    assert (again["executed"], again["stale_reexecuted"]) == (0, 0)
    fixed = execute([FAST], samples, results, ExecConfig(workers=2), progress=False)  # other limits
    assert (fixed["executed"], fixed["stale_reexecuted"]) == (2, 2) and fixed["time_limit"]["mode"] == "fixed"


def test_calibration_path_that_is_a_directory(tmp_path):
    from coderl.execution.cache import CacheError

    with pytest.raises(CacheError, match=f"^{tmp_path}: is a directory"):
        Executor(ExecConfig(workers=1, time_limit="calibrated", calibration_path=str(tmp_path)))
