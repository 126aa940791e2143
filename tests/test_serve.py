"""coderl serve-executor: the sandbox over HTTP gives the in-process verdicts, refuses what it must
(4xx that change nothing, 429 when full, no open port without a token) and survives its workers.

Servers run in-process (uvicorn in a thread on a free port). Nothing here depends on timing: a
test that needs a request in flight waits for /metrics to show it, and a program that must still
be running then is one that runs until its time limit.
"""

from __future__ import annotations

import ast
import http.client
import itertools
import json
import os
import signal
import time
import urllib.parse
from pathlib import Path

import pytest

from coderl.config import ConfigError
from coderl.execution import ExecConfig, Executor, Limits
from coderl.problems.schema import Problem
from coderl.serve.client import ExecutorClient, ServiceError
from coderl.serve.runcode import stdio_problem, to_sandbox_fusion
from coderl.serve.serve_config import ServeConfig, check_bind
from coderl.serve.server import BackgroundServer

import test_execution_hostile as hostile

pytestmark = pytest.mark.timeout(300)

TOKEN = "serve-test-token"
GOOD = hostile.GOOD
LOOP = "def f(x):\n    while True:\n        pass\n"


def exec_config(**kw) -> ExecConfig:
    """The hostile suite's engine settings (so that verdicts are comparable)."""
    base = dict(workers=2, timeout=1.0, limits=Limits(memory_mb=512, file_size_mb=4, max_procs=32),
                isolation=os.environ.get("CODERL_TEST_ISOLATION", "auto"))
    return ExecConfig(**{**base, **kw})


# -- the hostile corpus, read from tests/test_execution_hostile.py (not copied) --------------------
_SAFE = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.Add, ast.Mod, ast.JoinedStr,
         ast.FormattedValue, ast.Tuple, ast.List, ast.Dict, ast.Subscript, ast.keyword)


def _value(node: ast.AST, env: dict):
    """The value of an expression made of literals, names and ``Problem(...)`` only (no other call:
    nothing with a side effect runs)."""
    tree = ast.Expression(node)
    for n in ast.walk(tree):
        plain = isinstance(n, _SAFE) or (isinstance(n, ast.Call) and ast.unparse(n.func) == "Problem")
        if not plain:
            raise NameError("not a plain expression")
    return eval(compile(tree, "<hostile>", "eval"), {"__builtins__": {}}, env)


def _params(fn: ast.FunctionDef, env: dict) -> list[dict]:
    """One dict per combination of the test's @pytest.mark.parametrize values."""
    axes = []
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize"):
            names = [n.strip() for n in _value(dec.args[0], env).split(",")]
            values = _value(dec.args[1], env)
            axes.append([dict(zip(names, v if len(names) > 1 else (v,))) for v in values])
    return [dict(itertools.chain.from_iterable(d.items() for d in combo)) for combo in itertools.product(*axes)]


def _calls(fn: ast.FunctionDef, env: dict) -> list[tuple[Problem, str]]:
    """(problem, program) of each ``run(ex, P, prog)`` / ``ex.run(P, prog)`` whose arguments are plain."""
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                env[node.targets[0].id] = _value(node.value, env)
            except Exception:  # noqa: BLE001 - not a plain value: later uses are skipped
                env.pop(node.targets[0].id, None)
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        args = node.args[1:] if name == "run" else node.args if name == "ex.run" else None
        if args is None or len(args) < 2:
            continue
        try:
            problem, program = _value(args[0], env), _value(args[1], env)
        except Exception:  # noqa: BLE001 - built at run time (a port, a temp path): not reusable
            continue
        if isinstance(problem, Problem) and isinstance(program, str):
            found.append((problem, program))
    return found


def _guards(fn: ast.FunctionDef) -> tuple[str, ...]:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "need":
            return tuple(a.value for a in node.args[1:] if isinstance(a, ast.Constant))
    return ()


def hostile_corpus(guards: dict[str, bool]) -> list[tuple[str, Problem, str, bool]]:
    """(test name, problem, program, strict) of every hostile program that names its problem and
    program plainly, plus the forking programs; those whose test needs guards this engine lacks are
    left out. ``strict``: the hostile test pins the error's detail or type, so must the comparison
    (elsewhere it pins the outcome only: a fork bomb may be stopped by one limit or another)."""
    tree = ast.parse(Path(hostile.__file__).read_text())
    corpus, seen = [], set()
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
            continue
        need = _guards(fn)
        if need and not any(guards.get(g) for g in need):
            continue
        try:
            combos = _params(fn, vars(hostile))
        except NameError:  # parametrized with computed values (FORKS: added below)
            continue
        strict = any(w in ast.unparse(fn) for w in ("r.detail", "r.error_type"))
        for params in combos:
            for problem, program in _calls(fn, {**vars(hostile), **params}):
                if (problem.id, program) not in seen:
                    seen.add((problem.id, program))
                    corpus.append((fn.name, problem, program, strict))
    corpus += [("FORKS", hostile.DOUBLE_ASSERT, prog, True) for prog in hostile.FORKS.values()]
    return corpus


def verdict(r, strict: bool = True) -> tuple:
    """What must agree: the job's hash (the same job ran), outcome, tests passed and, where the
    hostile suite pins them, detail and error type (a memory bomb may meet either limit: the suite
    accepts both)."""
    if not strict:
        return r.hash, r.outcome, r.tests_passed
    detail = "resource" if r.detail in ("memory", "timeout") else r.detail
    error = "resource" if detail == "resource" else r.error_type
    return r.hash, r.outcome, r.tests_passed, detail, error


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv():
    with BackgroundServer(ServeConfig(port=0, token=TOKEN, max_body_bytes=64 << 10), exec_config()) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    return ExecutorClient(srv.url, token=TOKEN)


@pytest.fixture(scope="module")
def local():
    with Executor(exec_config()) as ex:
        yield ex


def raw(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, JSON body) of one request, sent as given."""
    u = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None), dict(resp.getheaders())
    finally:
        conn.close()


def authed(extra: dict | None = None) -> dict:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(extra or {})}


def programs_run(client) -> int:
    return client.metrics()["programs"]


# -- verdicts -------------------------------------------------------------------------------------
def test_health_and_metrics(srv, client):
    assert client.health()["status"] == "ok"
    m = client.metrics()
    for key in ("queue_depth", "in_flight", "programs_per_s", "outcomes", "workers", "capacity", "rejected"):
        assert key in m
    assert m["workers"] == 2 and m["capacity"] == 2 + ServeConfig().max_queue


def test_hostile_corpus_same_verdicts_over_http(srv, client, local):
    corpus = hostile_corpus(local.guards)
    assert len(corpus) >= 30  # the corpus was found (not silently empty)
    before = programs_run(client)
    here = local.run_many([(p, prog, "hidden") for _, p, prog, _ in corpus])
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        there = list(pool.map(lambda item: client.execute(item[1], [item[2]])[0], corpus))
    for (name, problem, _, strict), a, b in zip(corpus, here, there):
        assert verdict(b, strict) == verdict(a, strict), (name, problem.id, a, b)
    assert programs_run(client) == before + len(corpus)
    # the service still serves, and its workers are the ones it started with
    assert client.execute(hostile.DOUBLE_ASSERT, [GOOD])[0].outcome == "passed"
    assert client.run_code("print(2 * int(input()))", "21\n")["run_result"]["stdout"] == "42\n"
    assert srv.engine.executor.live_workers() == 2 and srv.engine.executor.restarts == 0


def run_code_here(ex: Executor, code: str, stdin: str = "") -> dict:
    """What POST /run_code answers for ``code``, computed in this process (the job it builds)."""
    p, cfg = stdio_problem(stdin), ex.config
    job = ex.job_for(p, code, "hidden", True, timeout=cfg.timeout, memory_mb=cfg.limits.memory_mb,
                     max_job_seconds=ServeConfig().max_job_seconds, capture=cfg.max_output_kb << 10, real_exit=True)
    return {**to_sandbox_fusion(ex.run_prepared(p, job)),
            "limits": {"run_timeout": cfg.timeout, "memory_limit_MB": cfg.limits.memory_mb}}


def test_hostile_stdio_programs_through_run_code(client, local):
    corpus = [(n, prog, strict) for n, p, prog, strict in hostile_corpus(local.guards) if p.kind == "stdio"]
    assert len(corpus) >= 5
    for name, prog, strict in corpus:
        expected = run_code_view(run_code_here(local, prog), strict)
        assert run_code_view(client.run_code(prog, ""), strict) == expected, name


def run_code_view(reply: dict, strict: bool) -> dict:
    """A /run_code reply without its timing; where the hostile suite pins the outcome only, its
    status and return code (the output may name the worker's directory, the error another limit)."""
    run = dict(reply["run_result"] or {})
    run.pop("execution_time", None)
    if strict:
        return {**reply, "run_result": run}
    return {"status": reply["status"], "run_status": run.get("status"), "return_code": run.get("return_code")}


def test_programs_cannot_reach_the_service(srv, client, tmp_path):
    """A program can neither connect to the service's port, read its files, nor signal its process."""
    secret = tmp_path / "service-file.txt"
    secret.write_text("service data")
    port = int(srv.url.rsplit(":", 1)[1])
    attempts = {
        "connect": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "read": f"print(open({str(secret)!r}).read())",
        "signal": f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)",
    }
    before = client.metrics()["requests"].get("run_code", 0)
    for name, attempt in attempts.items():
        code = f"try:\n    {attempt.replace(chr(10), chr(10) + '    ')}\n    print('reached')\nexcept OSError as e:\n    print('blocked', type(e).__name__)\n"
        reply = client.run_code(code)
        assert reply["run_result"]["stdout"].startswith("blocked"), (name, reply)
    assert client.metrics()["requests"]["run_code"] == before + len(attempts)  # no request but ours
    assert secret.read_text() == "service data" and client.health()["status"] == "ok"


def test_batch_keeps_order_and_runs_duplicates_once(client):
    progs = [GOOD, "def f(x):\n    return 0\n", GOOD, "def f(x) return", GOOD]
    before = programs_run(client)
    results = client.execute(hostile.DOUBLE_ASSERT, progs)
    assert [r.outcome for r in results] == ["passed", "failed", "passed", "compile_error", "passed"]
    assert [r.index for r in results] == list(range(5))
    assert [r.cached for r in results] == [False, False, True, False, True]
    assert programs_run(client) == before + 3


def test_example_tests_and_problem_fields(client):
    p = Problem(id="he", source="humaneval", question="q", kind="assert", entry_point="f", prompt="def f(x):\n",
                tests={"setup": "", "asserts": [], "check": "def check(c):\n    assert c(2) == 4\n"},
                example_tests={"setup": "", "asserts": ["assert f(1) == 2"], "check": None})
    assert client.execute(p, [GOOD], tests="example")[0].tests == "example"
    call = Problem(id="c", source="apps", question="q", kind="call", tests={"fn_name": "f", "inputs": [[3]],
                                                                             "outputs": [6]})
    assert client.execute(call, ["def f(x):\n    return 2 * x\n"])[0].outcome == "passed"


# -- /run_code: SandboxFusion's shape, as veRL sends and reads it ----------------------------------
def verl_payload(code: str, stdin: str | None, timeout: int = 10, memory: int = 1024) -> bytes:
    """The body veRL's sandbox_fusion client (verl/utils/reward_score/sandbox_fusion/utils.py) posts."""
    return json.dumps({"compile_timeout": timeout, "run_timeout": timeout, "code": code, "stdin": stdin,
                       "memory_limit_MB": memory, "language": "python", "files": {}, "fetch_files": []}).encode()


@pytest.mark.parametrize("code, stdin, status, run_status, rc, stdout", [
    ("print(int(input()) * 2)", "21\n", "Success", "Finished", 0, "42\n"),
    ("import sys\nprint(sys.stdin.read().split())", "a b\nc", "Success", "Finished", 0, "['a', 'b', 'c']\n"),
    ("print('no input')", None, "Success", "Finished", 0, "no input\n"),
    ("1 / 0", "", "Failed", "Finished", 1, ""),
    ("def f(:\n    pass", "", "Failed", "Finished", 1, ""),
    ("while True:\n    pass", "", "Failed", "TimeLimitExceeded", None, ""),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "", "Failed", "Finished", -11, ""),
])
def test_run_code_answers_like_sandbox_fusion(srv, code, stdin, status, run_status, rc, stdout):
    code_, body, _ = raw(srv, "POST", "/run_code", verl_payload(code, stdin), authed())
    assert code_ == 200
    assert body["status"] == status and body["compile_result"] is None
    run = body["run_result"]
    assert (run["status"], run["return_code"], run["stdout"]) == (run_status, rc, stdout)
    assert isinstance(run["execution_time"], float) and isinstance(run["stderr"], str)
    if status == "Failed" and run_status == "Finished" and rc == 1:
        assert run["stderr"].strip()  # the error's last line, as Python prints it


def test_run_code_returns_a_long_stdout_whole(client):
    # the executor keeps 2000 characters of a verdict's stdout; /run_code's job captures all of it
    # (up to max_output_kb), so a correct long answer compares equal under veRL
    reply = client.run_code("print('x' * 5000)\nprint('y' * 3000)")
    assert reply["status"] == "Success"
    assert reply["run_result"]["stdout"] == "x" * 5000 + "\n" + "y" * 3000 + "\n"
    p = Problem(id="long", source="jsonl", question="q", kind="stdio", tests={"inputs": [""], "outputs": ["x" * 5000]})
    [r] = client.execute(p, ["print('x' * 5000)"])  # /v1/execute compares the whole output, keeps 2000
    assert r.outcome == "passed" and len(r.stdout) < 2100


RLIMITS = ("import resource\n"
           "print(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20, resource.getrlimit(resource.RLIMIT_CPU)[0])")


def test_run_code_limits_are_capped(client):
    # asked for more than the server allows: the server's (echoed, and what the program runs under:
    # RLIMIT_AS = memory, RLIMIT_CPU = ceil((per-test limit + 1) x 2) + 1); asked for less: granted
    reply = client.run_code(RLIMITS, run_timeout=8, memory_limit_MB=100_000)
    assert reply["limits"] == {"run_timeout": 1.0, "memory_limit_MB": 512}
    assert reply["run_result"]["stdout"] == "512 5\n"
    assert client.run_code("while True:\n    pass", run_timeout=100)["run_result"]["status"] == "TimeLimitExceeded"
    low = client.run_code(RLIMITS, run_timeout=0.5, memory_limit_MB=300)
    assert low["limits"] == {"run_timeout": 0.5, "memory_limit_MB": 300} and low["run_result"]["stdout"] == "300 4\n"
    big = "b = bytearray(350 * 2 ** 20)\nprint(len(b) > 0)"
    low = client.run_code(big, memory_limit_MB=300)
    assert low["status"] == "Failed" and "MemoryError" in low["run_result"]["stderr"]
    p = hostile.DOUBLE_ASSERT
    reply = client.request("POST", "/v1/execute", {"programs": [GOOD], "problem": {"kind": p.kind, "tests": p.tests,
                                                                                  "entry_point": "f"},
                                                   "timeout": 1e9, "memory_mb": 1})
    assert reply["limits"] == {"timeout": 1.0, "memory_mb": 256}


# -- refusals that change nothing -----------------------------------------------------------------
PROBLEM = {"kind": "assert", "tests": {"setup": "", "asserts": ["assert f(2) == 4"], "check": None}, "entry_point": "f"}
MALFORMED = [
    ("/run_code", b"{not json", 400, None),
    ("/run_code", b"", 400, None),
    ("/run_code", b"[1, 2]", 422, "body"),
    ("/run_code", b'{"stdin": "x"}', 422, "code"),
    ("/run_code", b'{"code": 1}', 422, "code"),
    ("/run_code", b'{"code": "print(1)", "language": "cpp"}', 422, "language"),
    ("/run_code", b'{"code": "print(1)", "run_timeout": "10"}', 422, "run_timeout"),
    ("/run_code", b'{"code": "print(1)", "run_timeout": -1}', 422, "run_timeout"),
    ("/run_code", b'{"code": "print(1)", "files": {"a.txt": "eA=="}}', 422, "files"),
    ("/v1/execute", json.dumps({"programs": [], "problem": PROBLEM}).encode(), 422, "programs"),
    ("/v1/execute", json.dumps({"programs": ["x", 3], "problem": PROBLEM}).encode(), 422, "programs.1"),
    ("/v1/execute", json.dumps({"programs": ["x"]}).encode(), 422, "problem"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": {**PROBLEM, "kind": "sql"}}).encode(), 422, "problem.kind"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": {**PROBLEM, "tests": {"asserts": "no"}}}).encode(),
     422, "problem"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": PROBLEM, "tests": "secret"}).encode(), 422, "tests"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": PROBLEM, "tests": "example"}).encode(), 422,
     "problem.example_tests"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": PROBLEM, "timeout": True}).encode(), 422, "timeout"),
    ("/v1/execute", json.dumps({"programs": ["x"], "problem": PROBLEM, "typo": 1}).encode(), 422, "typo"),
    ("/v1/execute", json.dumps({"programs": ["x"] * 513, "problem": PROBLEM}).encode(), 422, "programs"),
]


@pytest.mark.parametrize("path, body, status, field", MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_requests_get_a_clear_4xx(srv, client, path, body, status, field):
    before = programs_run(client)
    code, reply, _ = raw(srv, "POST", path, body, authed())
    assert code == status, reply
    assert reply["message"] and reply["error"]
    if field is not None:
        assert reply["field"] == field and reply["message"].startswith(field)
    assert programs_run(client) == before


def test_oversized_requests_get_413(srv, client):
    before = programs_run(client)
    big = json.dumps({"code": "x = '" + "a" * (70 << 10) + "'"}).encode()
    code, reply, _ = raw(srv, "POST", "/run_code", big, authed())
    assert code == 413 and "65536" in reply["message"]
    # no Content-Length: the body streams in chunks and is counted as it comes
    u = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))
    conn.request("POST", "/run_code", body=chunks, headers=authed(), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"] == "request too large"
    conn.close()
    assert programs_run(client) == before
    assert client.run_code("print(1)")["run_result"]["stdout"] == "1\n"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_unauthenticated_requests_get_401(srv, client, headers):
    before = programs_run(client)
    for method, path, body in (("POST", "/run_code", verl_payload("print(1)", None)), ("GET", "/metrics", None),
                               ("POST", "/v1/execute", b"{}")):
        code, reply, hdrs = raw(srv, method, path, body, {"Content-Type": "application/json", **headers})
        assert code == 401 and "token" in reply["message"]
        assert hdrs.get("www-authenticate") == "Bearer"
    assert raw(srv, "GET", "/health", None, headers)[0] == 200  # liveness needs no token
    assert programs_run(client) == before


# -- admission ------------------------------------------------------------------------------------
def test_full_queue_answers_429_and_queues_nothing(srv, client):
    engine = srv.engine
    engine._admit(engine.capacity)  # every slot taken (as by requests in flight)
    try:
        before = client.metrics()
        code, reply, hdrs = raw(srv, "POST", "/run_code", verl_payload("print(1)", None), authed())
        assert code == 429 and reply["error"] == "busy" and hdrs.get("retry-after") == "1"
        after = client.metrics()
        assert after["admitted"] == before["admitted"] and after["programs"] == before["programs"]
    finally:
        for _ in range(engine.capacity):
            engine._release()
    assert client.run_code("print(1)")["status"] == "Success"


def test_queue_full_with_real_programs():
    """One worker, one queue slot: two endless programs fill it; a third request is refused while they run."""
    import threading

    with BackgroundServer(ServeConfig(port=0, max_queue=1, max_programs=2), exec_config(workers=1, timeout=2.0)) as small:
        c = ExecutorClient(small.url)
        results = {}
        t = threading.Thread(target=lambda: results.setdefault("a", c.execute(hostile.DOUBLE_ASSERT, [LOOP, LOOP + "#"])))
        t.start()
        while c.metrics()["admitted"] < 2:
            time.sleep(0.01)
        with pytest.raises(ServiceError) as e:  # (2 programs: refused while either endless one is admitted)
            ExecutorClient(small.url, busy_wait=0).execute(hostile.DOUBLE_ASSERT, [GOOD, GOOD + "#"])
        assert e.value.status == 429
        t.join()
        assert [r.detail for r in results["a"]] == ["timeout", "timeout"]
        m = c.metrics()
        assert m["programs"] == 2 and m["rejected"] == {"429": 1} and m["admitted"] == 0
        assert c.execute(hostile.DOUBLE_ASSERT, [GOOD])[0].outcome == "passed"


def test_worker_killed_mid_request_is_replaced():
    import threading

    with BackgroundServer(ServeConfig(port=0), exec_config(workers=1, timeout=2.0)) as one:
        c, ex = ExecutorClient(one.url), one.engine.executor
        [first] = ex.worker_pids()
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", c.execute(hostile.DOUBLE_ASSERT, [LOOP])))
        t.start()
        deadline = time.monotonic() + 120
        while ex.busy_workers() < 1:  # the job is on the worker (an endless program: it still runs)
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.01)
        for kill in (os.killpg, os.kill):
            try:
                kill(first, signal.SIGKILL)
            except OSError:
                pass
        t.join()
        [r] = out["r"]
        # ran again on the replacement (its own verdict: the time limit) or failed cleanly (no verdict)
        assert (r.outcome, r.detail) in {("runtime_error", "timeout"), ("runtime_error", "engine")}
        assert c.execute(hostile.DOUBLE_ASSERT, [GOOD])[0].outcome == "passed"
        assert ex.restarts >= 1 and ex.live_workers() == 1 and ex.worker_pids()[0] != first  # replaced
        assert c.health()["status"] == "ok" and c.metrics()["admitted"] == 0


# -- binding --------------------------------------------------------------------------------------
def test_non_loopback_bind_needs_a_token(monkeypatch):
    monkeypatch.delenv("CODERL_SERVE_TOKEN", raising=False)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(ConfigError, match="token"):
            check_bind(host, None)
        check_bind(host, "secret")
    with pytest.raises(ConfigError, match="refusing to bind"):
        BackgroundServer(ServeConfig(host="0.0.0.0", port=0), exec_config(workers=1))
    from typer.testing import CliRunner

    from coderl.cli import app

    res = CliRunner().invoke(app, ["serve-executor", "--host", "0.0.0.0", "--port", "0"])
    assert res.exit_code == 2 and "refusing to bind" in res.output
    res = CliRunner().invoke(app, ["serve-executor", "--max-queue", "-1"])
    assert res.exit_code == 2 and "serve.max_queue" in res.output


# -- findings of the security review (each test failed before its fix) ----------------------------
JSON = {"Content-Type": "application/json"}


def wait_for(condition, what: str, timeout: float = 120.0):
    """Poll ``condition()`` until it is truthy (no timing assumption: a generous bound, then fail)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


@pytest.fixture(scope="module")
def small():
    """One worker, room for 4 programs, a 1 MB file-size limit, 3 s per test, no token."""
    cfg = exec_config(workers=1, timeout=3.0, limits=Limits(memory_mb=512, file_size_mb=1, max_procs=32))
    with BackgroundServer(ServeConfig(port=0, max_queue=3, max_programs=4), cfg) as s:
        yield s


def test_lone_surrogates_are_refused_and_never_half_feed_a_worker(small):
    c = ExecutorClient(small.url)
    before = c.metrics()["programs"]
    code, reply, _ = raw(small, "POST", "/run_code", b'{"code": "print(input())", "stdin": "\\ud800"}', JSON)
    assert code == 422 and reply["field"] == "stdin" and "surrogate" in reply["message"]
    bad = json.dumps({"programs": [GOOD], "problem": PROBLEM}).replace('"setup": ""', '"setup": "\\ud800"')
    code, reply, _ = raw(small, "POST", "/v1/execute", bad.encode(), JSON)
    assert code == 422 and reply["field"] == "problem.tests" and ".setup" in reply["message"]
    code, reply, _ = raw(small, "POST", "/v1/execute", b'{"programs": ["x = \'\\udfff\'"], "problem": %s}'
                         % json.dumps(PROBLEM).encode(), JSON)
    assert code == 422 and reply["field"] == "programs" and "programs.0" not in reply["message"]
    assert c.metrics()["programs"] == before
    # the next requests on the (only) worker get their own verdicts
    assert c.run_code("print(6 * 7)")["run_result"]["stdout"] == "42\n"
    assert c.execute(hostile.DOUBLE_ASSERT, [GOOD])[0].outcome == "passed"


def test_executor_never_half_feeds_a_worker():
    """The engine itself: a job that cannot be encoded fails alone (an engine error, no verdict),
    the worker untouched; the next program on the same worker gets its own verdict."""
    bad = Problem(id="s", source="jsonl", question="q", kind="assert", entry_point="f",
                  tests={"setup": "\ud800", "asserts": ["assert f(2) == 4"], "check": None})
    with Executor(exec_config(workers=1)) as ex:
        [pid] = ex.worker_pids()
        r = ex.run(bad, GOOD)
        assert (r.outcome, r.detail) == ("runtime_error", "engine") and "UnicodeEncodeError" in r.error_message
        for _ in range(3):
            assert ex.run(hostile.DOUBLE_ASSERT, GOOD).outcome == "passed"
        assert ex.worker_pids() == [pid] and ex.restarts == 0


@pytest.mark.parametrize("code, status, rc, stderr", [
    ("print(42)\nimport sys\nsys.exit(1)", "Failed", 1, ""),
    ("print(42)\nexit('fatal: bad input')", "Failed", 1, "fatal: bad input\n"),
    ("print(42)\nraise SystemExit(3)", "Failed", 3, ""),
    ("print(42, flush=True)\nimport os\nos._exit(3)", "Failed", 3, ""),
    ("print(42)\nimport sys\nsys.exit(0)", "Success", 0, ""),
    ("print(42)\nimport sys\nsys.exit()", "Success", 0, ""),
])
def test_run_code_reports_the_exit_status(small, code, status, rc, stderr):
    reply = ExecutorClient(small.url).run_code(code)
    run = reply["run_result"]
    assert (reply["status"], run["status"], run["return_code"], run["stdout"], run["stderr"]) == (
        status, "Finished", rc, "42\n", stderr)


def test_execute_keeps_apps_exit_rule(small):
    # /v1/execute: exit after printing the answer is a normal end (CodeRL's APPS harness)
    p = Problem(id="x", source="apps", question="q", kind="stdio", tests={"inputs": ["2\n"], "outputs": ["4\n"]})
    r = ExecutorClient(small.url).execute(p, ["print(2 * int(input()))\nimport sys\nsys.exit(1)",
                                             "print(2 * int(input()))\nimport os\nos._exit(3)"])
    assert r[0].outcome == "passed"
    assert (r[1].outcome, r[1].detail, r[1].error_type) == ("runtime_error", "exited", "ExitStatus")


def test_requests_past_capacity(small):
    # a server that could never admit a request of max_programs does not start
    with pytest.raises(ConfigError, match="serve.max_programs"):
        BackgroundServer(ServeConfig(port=0, max_queue=2), exec_config(workers=1))
    # the client reads the bound from /health and splits its batch (capacity 4 here)
    c = ExecutorClient(small.url)
    health = c.health()
    assert (health["max_programs"], health["capacity"]) == (4, 4)
    progs = [f"def f(x):\n    return {k} * x\n" for k in range(2, 8)] * 2  # 12 programs, 6 distinct
    results = c.execute(hostile.DOUBLE_ASSERT, progs)
    assert [r.index for r in results] == list(range(12))
    assert [r.outcome for r in results] == (["passed"] + ["failed"] * 5) * 2
    assert c.metrics()["rejected"].get("429", 0) == 0
    from coderl.serve.scoring import RemoteScorer  # (its chunks run in parallel: 429s retried)

    scored = RemoteScorer(small.url, busy_wait=120).run([(hostile.DOUBLE_ASSERT, p) for p in progs])
    assert [r.outcome for r in scored] == [r.outcome for r in results]
    # the engine refuses (422, never 429 forever) what could never be admitted
    import asyncio

    from coderl.serve.engine import Job, NeverFits

    jobs = [Job(hostile.DOUBLE_ASSERT, f"# {i}\n" + GOOD) for i in range(5)]
    with pytest.raises(NeverFits, match="more than this service ever admits"):
        asyncio.run(small.engine.run(jobs))
    assert c.metrics()["admitted"] == 0


def test_a_failed_restart_is_retried_and_health_tells(monkeypatch):
    from coderl.execution import pool

    real = pool._Worker.start
    with BackgroundServer(ServeConfig(port=0), exec_config(workers=1)) as one:
        c, ex = ExecutorClient(one.url), one.engine.executor
        failing = {"on": True}

        def flaky(self):
            if failing["on"]:
                self.stop()
                raise pool.EngineError("simulated start failure")
            return real(self)

        monkeypatch.setattr(pool._Worker, "start", flaky)
        [pid] = ex.worker_pids()
        os.killpg(pid, signal.SIGKILL)
        code, body, _ = wait_for(lambda: (r := raw(one, "GET", "/health"))[0] == 503 and r, "health 503")
        assert body["status"] == "unavailable" and body["live_workers"] == 0
        reply = c.run_code("print(1)")
        assert reply["status"] == "SandboxError" and "EngineError: simulated start failure" in reply["message"]
        failing["on"] = False  # the restart works again: the next request starts the worker first
        for _ in range(3):
            assert c.run_code("print(1)")["run_result"]["stdout"] == "1\n"
        assert c.health()["live_workers"] == 1 and ex.live_workers() == 1


def test_serving_needs_the_sandbox_guards(monkeypatch):
    from coderl.execution import sandbox
    from coderl.serve.server import startup_lines

    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)  # isolation auto falls back to none
    with pytest.warns(RuntimeWarning), pytest.raises(ConfigError, match="net_namespace"):
        BackgroundServer(ServeConfig(port=0), exec_config(workers=1, isolation="auto")).start()
    from typer.testing import CliRunner

    from coderl.cli import app

    with pytest.warns(RuntimeWarning):
        res = CliRunner().invoke(app, ["serve-executor", "--port", "0", "--workers", "1", "--isolation", "auto"])
    assert res.exit_code == 2 and "refusing to serve" in res.output and "--isolation none" in res.output
    # an explicit --isolation none serves, and says so loudly
    with pytest.warns(RuntimeWarning):
        srv = BackgroundServer(ServeConfig(port=0), exec_config(workers=1, isolation="none")).start()
    try:
        lines = startup_lines(srv.engine, srv.serve_cfg, srv.url, None)
        assert "not active: bwrap, pid_namespace, net_namespace" in lines[1]
        assert lines[2].startswith("WARNING: --isolation none") and "network" in lines[2]
        assert ExecutorClient(srv.url).run_code("print(1)")["status"] == "Success"
    finally:
        srv.stop()


def test_disconnected_client_cancels_its_programs(small):
    import socket

    c, ex = ExecutorClient(small.url), small.engine.executor
    before = c.metrics()
    endless = {"programs": [LOOP + f"# {i}\n" for i in range(4)], "problem": PROBLEM, "early_exit": False}
    body = json.dumps(endless).encode()
    u = urllib.parse.urlsplit(small.url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    wait_for(lambda: c.metrics()["admitted"] == 4 and ex.busy_workers() == 1, "the programs admitted, one running")
    sock.close()  # the client goes away
    after = wait_for(lambda: (m := c.metrics())["admitted"] == 0 and m, "every slot given back")
    assert after["programs"] == before["programs"]  # none ran to a verdict, the running one included
    assert after["programs_cancelled"] - before["programs_cancelled"] == 4
    assert after["disconnects"] - before["disconnects"] == 1
    assert c.run_code("print(1)")["run_result"]["stdout"] == "1\n"


def test_client_never_sends_a_request_twice_after_a_timeout(small):
    before = ExecutorClient(small.url).metrics()["requests"].get("run_code", 0)
    c = ExecutorClient(small.url, timeout=2.0)
    c.health()  # the connection is kept alive: a failure on it used to be retried
    with pytest.raises(ServiceError, match="TimeoutError"):
        c.run_code("while True:\n    pass")  # runs to the server's 3 s limit: past the client's 2 s
    m = wait_for(lambda: (m := ExecutorClient(small.url).metrics())["admitted"] == 0 and m, "the run to end")
    assert m["requests"]["run_code"] == before + 1


def test_client_resends_once_on_a_stale_kept_alive_connection():
    """A connection the server closed while idle fails before any byte of the answer: sent again."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port, seen = listener.getsockname()[1], []
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'

    def serve() -> None:
        for _ in range(2):  # each connection: one answer, then closed without a word (keep-alive was implied)
            conn, _ = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            seen.append(data.split(b"\r\n")[0])
            conn.sendall(answer)
            conn.recv(65536)  # the client's next request on this connection, never answered
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = ExecutorClient(f"http://127.0.0.1:{port}", timeout=60)
    assert c.request("GET", "/a") == {} and c.request("GET", "/b") == {}
    t.join(60)
    listener.close()
    assert seen == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"]


def test_stdin_past_the_file_size_limit_is_refused(small):
    c = ExecutorClient(small.url)
    ok = c.run_code("import sys\nprint(len(sys.stdin.read()))", "a" * 500_000)
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "500000\n"
    big = json.dumps({"code": "print(1)", "stdin": "a" * 2_000_000}).encode()
    code, reply, _ = raw(small, "POST", "/run_code", big, JSON)
    assert code == 422 and reply["field"] == "stdin" and "file size limit" in reply["message"]
    prob = {"kind": "stdio", "tests": {"inputs": ["1\n", "a" * 2_000_000], "outputs": ["1\n", "1\n"]}}
    code, reply, _ = raw(small, "POST", "/v1/execute", json.dumps({"programs": ["print(1)"], "problem": prob}).encode(),
                         JSON)
    assert code == 422 and reply["field"] == "problem.tests.inputs.1"


def test_job_budget_and_test_count_are_capped():
    cpu = "import resource\nprint(resource.getrlimit(resource.RLIMIT_CPU)[0])\n" + GOOD
    asserts = ["assert f(2) == 4"] * 5
    with BackgroundServer(ServeConfig(port=0, max_job_seconds=2.0, max_tests=5), exec_config(workers=1)) as one:
        c = ExecutorClient(one.url)
        p = Problem(id="five", source="jsonl", question="q", kind="assert", entry_point="f",
                    tests={"setup": "", "asserts": asserts, "check": None})
        [r] = c.execute(p, [cpu])
        assert r.outcome == "passed" and r.stdout == "3\n"  # budget min(2 s, (1 + 1) x 6 s): RLIMIT_CPU 3
        six = {"kind": "assert", "entry_point": "f",
               "tests": {"setup": "", "asserts": asserts + asserts[:1], "check": None}}
        code, reply, _ = raw(one, "POST", "/v1/execute", json.dumps({"programs": [GOOD], "problem": six}).encode(),
                             JSON)
        assert code == 422 and reply["field"] == "problem.tests" and "at most 5" in reply["message"]


def test_open_paths_take_no_body_and_connections_are_bounded():
    import socket

    with BackgroundServer(ServeConfig(port=0, max_connections=2), exec_config(workers=1)) as one:
        code, reply, _ = raw(one, "GET", "/health", b"x" * 1000, {"Content-Type": "application/json"})
        assert code == 413 and "no request body" in reply["message"]
        u = urllib.parse.urlsplit(one.url)

        def hold():  # a connection answered 200 and kept open (a closed one may linger a moment)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200 and conn.sock is not None:
                return conn
            conn.close()

        held = wait_for(hold, "a kept-alive connection")
        other = socket.create_connection((u.hostname, u.port), timeout=60)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n" not in head and (chunk := other.recv(100)):
            head += chunk
        assert head.startswith(b"HTTP/1.1 503")  # past --max-connections
        other.close()
        held.close()
        wait_for(lambda: raw(one, "GET", "/health")[0] == 200, "the held connection to be gone")
