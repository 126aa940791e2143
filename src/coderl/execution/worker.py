"""A warm worker: one long-lived (sandboxed) Python process that runs programs one at a time.

For each program it uses a confined child forked *ahead of time* (``spawn``, right after the
previous program was cleaned up, so the fork is off the critical path) by its fork server
(``zygote.py``: the worker itself then shares no memory with a running child). The child receives the
program over its pipe; the expected outputs never reach it: the worker reads them only after the
fork and decides every verdict itself, on decoded plain data:

* stdio  – the child runs the program once per input in a fresh process; stdout compared here;
* call   – the child calls ``fn_name`` (or ``Solution().fn_name``); return values compared here;
* assert – MBPP asserts and HumanEval's ``check`` run *here*, with every name the program defined
  replaced by a proxy that calls into the sandbox; values come back as data, so the comparison
  ``f(x) == expected`` happens on the trusted side. No assert runs inside the sandbox, so no
  completion proof is needed; the one thing delegated is ``==`` between two of the program's own
  objects (an MBPP test comparing two ``Pair`` instances asks for the program's semantics).

Cleanup (``finish``, after the result is sent): reap the child (through the zygote), kill everything
its uid left running when the worker's pids cgroup shows extra processes, reap orphans (the worker
is a child subreaper), empty the private directory, fork the next child.

Protocol with the engine (stdin/stdout of this process, ``wire`` frames): a ``hello`` frame on
start; then per program a ``job`` frame (program, limits), a ``tests`` frame, and one ``result``
frame back. EOF on stdin ends the worker.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import os
import signal
import sys
import time
from typing import Any

from coderl.execution import codes as oc, compare, confine, wire
from coderl.execution.child import Child, forked_copy
from coderl.execution.zygote import Zygote

# Imported once here so that programs importing them (most HumanEval prompts import typing) find
# them loaded: an import inside each forked child would cost milliseconds.
import bisect, collections, heapq, itertools, math, re, string, typing  # noqa: E401,F401,E402

# CodeRL's (APPS's) fixed import block, put in the globals of APPS programs (not prepended as text,
# so that line numbers in errors stay the program's own).
APPS_PREAMBLE = """\
import sys
import time
import itertools
from itertools import accumulate, product, permutations, combinations
import collections
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
import math
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
import fractions
from typing import List, Tuple
import numpy as np
import random
import heapq
from heapq import *
"""

# what a child may say about an error -> Result.detail (anything else is ignored)
_DETAILS = {"memory": oc.MEMORY, "output_limit": oc.OUTPUT_LIMIT, "recursion": None, None: None}


def _detail(value: Any) -> str | None:
    return _DETAILS.get(value) if isinstance(value, str) else None


def load_apps_preamble() -> dict[str, Any]:
    """APPS's import block (numpy included), imported by the zygote on the first APPS program:
    workers that only run MBPP/HumanEval stay small and fork faster."""
    preamble: dict[str, Any] = {}
    exec(APPS_PREAMBLE, preamble)
    preamble.pop("__builtins__", None)
    gc.freeze()
    return preamble


GRACE = 0.25  # seconds on top of a per-test timeout for the round trip (stdio: the fork)


class TestTimeout(Exception):
    pass


class RemoteError(Exception):
    """The program raised (or died) while the trusted side was waiting for it."""

    def __init__(self, info: dict[str, Any], detail: str | None = None):
        super().__init__(info.get("message", ""))
        self.info, self.detail = info, detail or info.get("detail")


class Channel:
    """The trusted side's view of one running child."""

    def __init__(self, req_fd: int, rep_fd: int, deadline: float):
        self.req_fd, self.rep_fd, self.deadline = req_fd, rep_fd, deadline
        self.test_deadline = deadline
        self.broken = False  # a request went unanswered: the child can serve no further test
        self.seq = 0  # of the last request (the child's load reply carries 0)

    def ask(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        deadline = self.test_deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        self.seq += 1
        message["seq"] = self.seq
        try:
            wire.send(self.req_fd, message, deadline=deadline)
            reply = wire.recv(self.rep_fd, deadline=deadline)
        except wire.FrameTimeout:
            self.broken = True
            raise RemoteError({"type": "TimeoutError", "message": "time limit exceeded"}, oc.TIMEOUT) from None
        except (wire.ProtocolError, BrokenPipeError, OSError) as e:
            self.broken = True
            raise RemoteError({"type": "ProgramExited", "message": f"the program stopped answering ({e})"},
                              oc.EXITED) from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.broken = True
            raise RemoteError({"type": "ProtocolError", "message": "malformed reply"}, oc.PROTOCOL)
        if reply.get("seq") != self.seq:
            self.broken = True
            raise RemoteError(_out_of_turn(reply.get("seq"), self.seq), oc.PROTOCOL)
        if not reply["ok"]:
            info = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            info = {"type": str(info.get("type", "Exception"))[:100], "message": str(info.get("message", ""))[:2000],
                    "line": info.get("line") if isinstance(info.get("line"), int) else None,
                    "detail": _detail(info.get("detail"))}
            err = RemoteError(info, _detail(info["detail"]))
            err.stage = reply.get("stage")
            raise err
        return reply

    def value(self, reply: dict[str, Any]) -> Any:
        try:
            return wire.decode(reply.get("value"), channel=self)
        except wire.ProtocolError as e:
            raise RemoteError({"type": "ProtocolError", "message": str(e)}, oc.PROTOCOL) from None

    def call(self, target: Any, args: tuple, kwargs: dict) -> Any:
        return self.value(self.ask({"op": "call", "fn": target, "args": wire.encode(list(args)),
                                    "kwargs": wire.encode(dict(kwargs))}))

    def eq(self, a: wire.Handle, b: wire.Handle) -> bool:
        return self.value(self.ask({"op": "eq", "a": a.id, "b": b.id})) is True


class Proxy:
    """A program function, seen from the trusted side: calling it runs it in the sandbox."""

    __slots__ = ("_channel", "_target", "__name__")

    def __init__(self, channel: Channel, target: Any, name: str):
        self._channel, self._target, self.__name__ = channel, target, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.call(self._target, args, kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed function {self.__name__}>"


class Worker:
    def __init__(self, uid: int | None, root: str, pids_current: str | None = None):
        self.uid, self.root = uid, root
        self.apps = False  # children get the APPS preamble (from the first APPS program on)
        self.pending: tuple[int | None] | None = None  # (child pid,) of the last program, until finish()
        self.spare: tuple[int, int, int] | None = None  # pre-forked child: pid, req_w, rep_r
        self.status: int | None = None
        self.workdir = os.path.join(root, "work")  # private to the program (mode 700, its uid)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        # the program's stdout/stderr: opened once, outside its directory, dup'ed onto its fds 1/2;
        # read back with pread, emptied before each fork (``_reset_output``)
        self.out_fd, self.err_fd = (os.open(os.path.join(root, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                                    for name in ("stdout", "stderr"))
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.own_pid_namespace = os.getpid() <= 3  # bwrap's init is pid 1, we are its child
        confine.prepare_worker(self.workdir, uid)
        # cgroup pids.current: lets us skip the (fork-costing) uid reaper when nothing was left behind
        # (kept open: a pread at offset 0 reads the current count again)
        self.pids_current = pids_current if pids_current and os.path.exists(pids_current) else None
        self.pids_fd = os.open(self.pids_current, os.O_RDONLY) if self.pids_current else None
        self.warm_up()
        gc.freeze()  # forked children then do not copy the worker's objects when they collect
        self.zygote = Zygote(self._child, load_apps_preamble, (self.out_fd, self.err_fd, self.devnull),
                             die_with_worker=not self.own_pid_namespace)
        self.baseline = self._pids()  # this worker, its zygote (and, under bwrap, its init)
        # per-test time limit of the asserts run here: installed once (the zygote and its children keep
        # the default), armed by ``_one_assert`` only
        self.alarm_armed = False
        signal.signal(signal.SIGALRM, self._alarm)

    @staticmethod
    def warm_up() -> None:
        """Run the children's code path in-process (a program loaded and called over pipes), so that
        forked children do not pay first-use costs: compiler and codecs initialised, and the bytecode
        of the harness already specialised (CPython rewrites a function's bytecode in place during
        its first runs: in each child that would be a copy-on-write fault per page of code)."""
        for kind in ("assert", "call") * 10:
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
            try:
                wire.send(req_w, {"op": "call", "fn": "f" if kind == "assert" else [None, "f"],
                                  "args": wire.encode([1, (2.5, None, {3}), [b"x", 1j]]), "kwargs": wire.encode({})})
                os.close(req_w)
                load = {"kind": kind, "program": "def f(a, b=2, c=None):\n    return [a + b for _ in range(3)]\nx = f(1)\n"}
                Child(load, req_r, rep_w, None).start()
                for _ in range(2):  # replies: loaded, called
                    wire.decode(wire.recv(rep_r).get("value"))
            finally:
                for fd in (req_r, rep_r, rep_w):
                    os.close(fd)

    def _pids(self) -> int | None:
        if self.pids_fd is None:
            return None
        try:
            return int(os.pread(self.pids_fd, 32, 0))
        except (OSError, ValueError):
            return None

    # -- one program --------------------------------------------------------------------------
    def spawn(self) -> None:
        """Have the zygote fork the child for the *next* program ahead of time (off the critical
        path). It holds nothing yet: the program arrives over its pipe, the expected outputs never do."""
        self._reset_output()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            pid = self.zygote.fork(req_r, rep_w, self.apps)
        except OSError:
            os.close(req_w)
            os.close(rep_r)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.spare = (pid, wire.set_nonblocking(req_w), wire.set_nonblocking(rep_r))

    def _child(self, req_r: int, rep_w: int, preamble: dict[str, Any] | None) -> None:  # pragma: no cover
        """The confined child, forked by the zygote: confine, wait for the job, run the program."""
        confine.enter_child(workdir=self.workdir, uid=self.uid, keep_fds=(req_r, rep_w),
                            stdout=self.out_fd, stderr=self.err_fd,
                            devnull=self.devnull, die_with_worker=not self.own_pid_namespace)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        job = wire.recv(req_r)
        confine.apply_limits(job["limits"], self.uid is not None)
        if job.get("kind") != "stdio":  # (stdio programs run in a fresh process per test anyway)
            os.register_at_fork(after_in_child=functools.partial(forked_copy, req_r, rep_w))
        Child(job, req_r, rep_w, preamble).start()

    def _reset_output(self) -> None:
        """Empty the output files for the next child. The previous one shared their open file
        descriptions (and every process it left is dead by now): rewind the shared offset and clear
        the status flags it may have set (O_APPEND, O_DIRECT, O_ASYNC...)."""
        for fd in (self.out_fd, self.err_fd):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            fcntl.fcntl(fd, fcntl.F_SETFL, 0)

    def discard_spare(self) -> None:
        if self.spare is not None:
            pid, req_w, rep_r = self.spare
            os.close(req_w)
            os.close(rep_r)
            confine.reap_uid(None, pid)
            self.pending, self.spare = (pid,), None
            self._wait_child()
            self.pending = None

    def run(self, job: dict[str, Any], tests_fd: int) -> dict[str, Any]:
        start = time.monotonic()
        try:
            self.finish()
            if job.get("apps_preamble") and not self.apps:
                self.apps = True
                self.discard_spare()  # forked before APPS's imports were loaded
            if self.spare is None:
                self.spawn()
        except OSError:
            if self.spare is None:  # no child (e.g. APPS's imports failed): later programs ask afresh
                self.apps = False
            wire.recv(tests_fd)  # keep the frame stream in step, then report the engine error
            raise
        pid, req_w, rep_r = self.spare
        self.spare = None
        self.pending = (pid,)
        channel = Channel(req_w, rep_r, start + job["job_timeout"])
        try:
            try:
                wire.send(req_w, job, deadline=channel.deadline)
            except (OSError, wire.FrameTimeout):
                pass  # a dead spare: the load below reports it
            tests = wire.recv(tests_fd)  # the child is already forked: it never holds these
            result = self.drive(job, tests, channel)
        finally:
            os.close(req_w)
            os.close(rep_r)
            confine.reap_uid(None, pid)  # SIGKILL the child's process group; reaped in finish()
        if result.get("detail") == oc.EXITED:  # how did it die? (it is dead: wait is immediate)
            status = self._wait_child()
            if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
                sig = os.WTERMSIG(status)
                result["detail"] = {signal.SIGXFSZ: oc.OUTPUT_LIMIT, signal.SIGXCPU: oc.TIMEOUT}.get(sig, oc.KILLED)
                result["error"] = {"type": "Killed", "message": f"killed by {signal.Signals(sig).name}", "line": None}
        result["stdout"] = _tail(self.out_fd) + result.pop("captured", "")
        result["stderr"] = _tail(self.err_fd)
        result["wall_time"] = time.monotonic() - start
        return result

    def _wait_child(self) -> int | None:
        pid = self.pending[0] if self.pending else None
        if pid is None:
            return self.status
        self.status = self.zygote.wait(pid)
        self.pending = (None,)
        return self.status

    def finish(self) -> None:
        """After the result is sent: reap the child, kill anything its uid left running (daemons,
        setsid'd grandchildren), reap orphans (we are a subreaper), empty the private directory,
        and fork the next child."""
        if self.pending is None:
            return
        self._wait_child()
        if self.baseline is None or (self._pids() or 0) > self.baseline + (1 if self.spare else 0):
            self.discard_spare()
            self.kill_leftovers()
        _reap_zombies()
        os.chmod(self.workdir, 0o700)  # the program owns it: it may have locked the next one out
        with os.scandir(self.workdir) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    _rmtree(e.path)
                else:
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass
        self.pending = None
        if self.spare is None:
            self.spawn()

    def kill_leftovers(self) -> None:
        """Kill every process the program left (daemons, setsid'd or fork-bombing descendants) until
        none is left. With a pids cgroup its member list names them all (only this worker and its
        descendants are members; pid 1 is bwrap's init); else ``kill(-1)`` as the program's uid."""
        procs = self.pids_current and os.path.join(os.path.dirname(self.pids_current), "cgroup.procs")
        if not procs:
            for _ in range(3):
                confine.reap_uid(self.uid, None)
                _reap_zombies()
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(procs) as f:
                    ours = (0, 1, os.getpid(), self.zygote.pid)
                    victims = [int(x) for x in f.read().split() if int(x) not in ours]
            except (OSError, ValueError):
                victims = []
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _reap_zombies()
            if not victims:
                return
            time.sleep(0.001)

    # -- the tests ----------------------------------------------------------------------------
    def drive(self, job: dict[str, Any], tests: dict[str, Any], ch: Channel) -> dict[str, Any]:
        kind, early_exit = job["kind"], tests.get("early_exit", True)
        per_test: list[Any] = []
        res: dict[str, Any] = {"per_test": per_test, "error": None, "detail": None}
        timeout = job["timeout"]
        # load: compile (and, for call/assert, run the top level)
        try:
            ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
            names = self._load(ch)
        except RemoteError as e:
            stage = getattr(e, "stage", None)
            compile_error = stage == "compile" or (stage == "load" and e.detail is None)
            res.update(error=e.info, detail=e.detail if not compile_error else None,
                       outcome=oc.COMPILE_ERROR if compile_error else oc.RUNTIME_ERROR)
            if stage == "exit":
                res["detail"] = oc.EXITED
            return res

        def record(code: Any, err: RemoteError | None = None) -> bool:
            """Keep the verdict; say whether to run the next test. Early exit is CodeRL's trick as
            released: stdio stops at the first test that does not pass, call-based (and here also
            assert-based) problems stop at the first runtime error only — so the outcome class does
            not depend on the mode, only tests_passed does."""
            per_test.append(code)
            if err is not None and res["error"] is None:
                res["error"], res["detail"] = err.info, err.detail
            if ch.broken:
                return False
            if not early_exit or code is True:
                return True
            return kind != "stdio" and code is False

        if kind == "stdio":
            for inp, expected in zip(tests["inputs"], tests["outputs"]):
                if not record(*self._stdio_test(ch, inp, expected, timeout, res)):
                    break
        elif kind == "call":
            fn = [None, tests["fn_name"]]
            for inp, expected in zip(tests["inputs"], tests["outputs"]):
                ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
                try:
                    value = ch.call(fn, tuple(compare.normalise_call_inputs(inp)), {})
                except RemoteError as e:
                    if not record(-1, e):
                        break
                    continue
                if not record(compare.call_equal(value, expected)):
                    break
        else:
            self._assert_tests(ch, names, tests, timeout, record, res)
        res["outcome"] = oc.aggregate(per_test) if per_test else oc.RUNTIME_ERROR
        return res

    def _load(self, ch: Channel) -> dict[str, Any]:
        try:
            reply = wire.recv(ch.rep_fd, deadline=ch.test_deadline)
        except wire.FrameTimeout:
            raise _staged(RemoteError({"type": "TimeoutError", "message": "time limit exceeded while loading"},
                                      oc.TIMEOUT), "timeout") from None
        except wire.ProtocolError as e:
            raise _staged(RemoteError({"type": "ProgramExited", "message": f"the program stopped answering ({e})"},
                                      oc.EXITED), "exited") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise _staged(RemoteError({"type": "ProtocolError", "message": "malformed reply"}, oc.PROTOCOL), "protocol")
        if reply.get("seq") != 0:
            raise _staged(RemoteError(_out_of_turn(reply.get("seq"), 0), oc.PROTOCOL), "protocol")
        if not reply["ok"]:
            info = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            info = {"type": str(info.get("type", "Exception"))[:100], "message": str(info.get("message", ""))[:2000],
                    "line": info.get("line") if isinstance(info.get("line"), int) else None}
            stage = reply.get("stage")
            detail = _detail(reply["error"].get("detail") if isinstance(reply.get("error"), dict) else None)
            raise _staged(RemoteError(info, detail), stage if stage in ("compile", "load", "exit") else "protocol")
        names = reply.get("names", {})
        return names if isinstance(names, dict) else {}

    def _stdio_test(self, ch: Channel, inp: str, expected: Any, timeout: float, res: dict) -> tuple:
        try:
            r = ch.ask({"op": "stdio", "input": inp, "timeout": timeout}, timeout + GRACE)
        except RemoteError as e:
            return -1, e
        stdout = r.get("stdout") if isinstance(r.get("stdout"), str) else ""
        res["captured"] = oc.truncate(stdout)
        if r.get("timeout"):
            return -1, RemoteError({"type": "TimeoutError", "message": "time limit exceeded"}, oc.TIMEOUT)
        sig = r.get("signal")
        if isinstance(sig, int):
            detail = {signal.SIGXFSZ: oc.OUTPUT_LIMIT, signal.SIGXCPU: oc.TIMEOUT}.get(sig, oc.KILLED)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return -1, RemoteError({"type": "Killed", "message": f"killed by {name}", "line": None}, detail)
        if r.get("exit") not in (0, None) or r.get("error"):
            info = r.get("error") if isinstance(r.get("error"), dict) else {}
            info = {"type": str(info.get("type", "Exception"))[:100], "message": str(info.get("message", ""))[:2000],
                    "line": info.get("line") if isinstance(info.get("line"), int) else None}
            return -1, RemoteError(info, _detail(r["error"].get("detail") if isinstance(r.get("error"), dict) else None))
        if r.get("truncated"):
            return -1, RemoteError({"type": "OutputLimit", "message": "output limit exceeded"}, oc.OUTPUT_LIMIT)
        return compare.stdio_equal(stdout, expected), None

    def _assert_tests(self, ch: Channel, names: dict, tests: dict, timeout: float, record, res: dict) -> None:
        namespace: dict[str, Any] = {"__name__": "__test__"}

        def bind(names: dict) -> None:
            for name, spec in names.items():
                if not isinstance(name, str) or not isinstance(spec, dict):
                    continue
                if spec.get("call"):
                    namespace[name] = Proxy(ch, name, name)
                elif "value" in spec:
                    try:
                        namespace[name] = wire.decode(spec["value"], channel=ch)
                    except wire.ProtocolError:
                        pass

        bind(names)
        statements: list[tuple[str, str]] = []
        if tests.get("setup", "").strip():
            ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
            try:
                bind(ch.ask({"op": "exec", "src": tests["setup"]}).get("names", {}))
            except RemoteError as e:
                record(-1, e)
                return
        statements += [(a, "assert") for a in tests.get("asserts", [])]
        if tests.get("check"):
            statements.append((tests["check"] + f"\n\ncheck({tests['entry_point']})\n", "check"))
        for src, _ in statements:
            if not record(*self._one_assert(ch, src, dict(namespace), timeout)):
                break

    def _one_assert(self, ch: Channel, src: str, namespace: dict, timeout: float) -> tuple:
        ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
        left = max(ch.test_deadline - time.monotonic(), 0.001)
        self.alarm_armed = True
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            exec(_compiled_test(src), namespace)
            return True, None
        except RemoteError as e:
            return -1, e
        except TestTimeout:
            ch.broken = True
            return -1, RemoteError({"type": "TimeoutError", "message": "time limit exceeded"}, oc.TIMEOUT)
        except NameError as e:  # the program does not define what the test calls
            return -1, RemoteError({"type": "NameError", "message": str(e), "line": None})
        except AssertionError:
            return False, None
        except Exception as e:  # the test choked on a wrong value (e.g. None < 1): a failed test
            return False, RemoteError({"type": type(e).__name__, "message": f"in the test: {e}"[:2000], "line": None})
        finally:
            self.alarm_armed = False  # first: an alarm already on its way is then ignored
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _alarm(self, *_: Any) -> None:
        if self.alarm_armed:
            raise TestTimeout()


@functools.lru_cache(maxsize=4096)
def _compiled_test(src: str) -> Any:
    """Test code (trusted dataset text) compiled once per worker."""
    return compile(src, "<test>", "exec")


def _out_of_turn(got: Any, want: int) -> dict[str, Any]:
    return {"type": "ProtocolError", "line": None,
            "message": f"a reply out of turn (to request {str(got)[:20]}, expected {want}): more than one "
                       "process answered for the program (did it fork a copy of itself?) or it wrote "
                       "into the harness's channel"}


def _staged(err: RemoteError, stage: str) -> RemoteError:
    err.stage = stage
    return err


def _reap_zombies() -> None:
    """Collect every exited child, including orphans re-parented to us (we are a subreaper)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil (and its compression modules) into the worker."""
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            try:
                os.unlink(os.path.join(top, name))
            except OSError:
                pass
        for name in dirs:
            try:
                os.rmdir(os.path.join(top, name))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _tail(fd: int, limit: int = oc.MAX_TEXT) -> str:
    """The end of an output file (pread: its offset is shared with the program's processes)."""
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - 4 * limit)
        return oc.truncate(os.pread(fd, size - start, start).decode("utf-8", "replace"), limit)
    except OSError:
        return ""


def probe() -> dict[str, Any]:
    def ns(name: str) -> str | None:
        try:
            return os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            return None

    return {"op": "hello", "pid": os.getpid(), "uid_drop": confine.can_drop_uid(),
            "pid_ns": ns("pid"), "net_ns": ns("net"), "mnt_ns": ns("mnt"),
            "subreaper": confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)}


def main() -> None:
    # argv: [--uid N] [--pids-current PATH] (no argparse: keep the worker small)
    argv = sys.argv[1:]
    opt = {argv[i]: argv[i + 1] for i in range(0, len(argv) - 1, 2)}
    uid_arg, pids_current = int(opt.get("--uid", -1)), opt.get("--pids-current")
    # our channel to the engine moves to private fds; fd 0/1 become harmless for stray prints
    parent_in, parent_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # programs print big integers as Python < 3.11 (and CodeRL's harness) did; children inherit this
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    uid = uid_arg if uid_arg >= 0 and confine.can_drop_uid() else None
    root = os.path.join("/tmp", f"coderl-worker-{os.getpid()}-{uid}")
    os.makedirs(root, mode=0o711, exist_ok=True)
    worker = Worker(uid, root, pids_current)
    worker.spawn()
    hello = probe()
    hello["uid"] = uid
    wire.send(parent_out, hello)
    try:
        while True:
            try:
                job = wire.recv(parent_in)
            except wire.ProtocolError:
                break  # the engine went away
            if job.get("op") != "job":
                break
            try:
                result = worker.run(job, parent_in)
            except Exception as e:  # an engine bug: report it, never cache it
                result = {"outcome": oc.RUNTIME_ERROR, "per_test": [], "detail": oc.ENGINE,
                          "error": {"type": type(e).__name__, "message": f"engine error: {e}", "line": None}}
            wire.send(parent_out, {"op": "result", **result})
            worker.finish()  # cleanup overlaps with the engine reading the result
    finally:
        worker.finish()
        worker.discard_spare()
        worker.zygote.close()
        _rmtree(root)


if __name__ == "__main__":
    main()
