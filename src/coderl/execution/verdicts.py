"""The verdicts, per problem kind: what the trusted side asks a loaded program and how it decides.

The worker hands over a ``Channel`` to a freshly loaded child and the tests; ``judge`` decides, on
decoded plain data only (the expected outputs never reach the child):

* stdio  – the child runs the program once per input in a fresh process; stdout compared here
  (``compare.stdio_equal``, APPS's rules);
* call   – the child calls ``fn_name`` (or ``Solution().fn_name``); return values compared here
  (``compare.call_equal``);
* assert – MBPP asserts and HumanEval's ``check`` run *here*, every name the program defined a
  proxy that calls into the sandbox; values come back as data, so ``f(x) == expected`` is decided
  on the trusted side. Only ``==`` between two of the program's own objects is delegated.

Outcome classes follow CodeRL (``codes.aggregate``); a reply that is not an answer to the request
just sent (malformed, out of turn, missing) is a runtime error whose ``detail`` says which.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from typing import Any

from coderl.execution import codes as oc, compare, wire

# what a child may say about an error -> Result.detail (anything else is ignored)
_DETAILS = {"memory": oc.MEMORY, "output_limit": oc.OUTPUT_LIMIT, "recursion": None, None: None}


def _detail(value: Any) -> str | None:
    return _DETAILS.get(value) if isinstance(value, str) else None


def _error_info(reply: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A child's error report, made plain data: (type, message, line) and its ``detail``."""
    raw = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    return ({"type": str(raw.get("type", "Exception"))[:100], "message": str(raw.get("message", ""))[:2000],
             "line": raw.get("line") if isinstance(raw.get("line"), int) else None}, _detail(raw.get("detail")))


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
            info, detail = _error_info(reply)
            raise _staged(RemoteError({**info, "detail": detail}, detail), reply.get("stage"))
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


def judge(job: dict[str, Any], tests: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """Run ``tests`` against the loaded program behind ``ch``: outcome, per_test, error, detail,
    ``captured`` (stdio: the last stdout), ``test_times`` (the load's and each test's seconds)."""
    kind, early_exit = job["kind"], tests.get("early_exit", True)
    per_test: list[Any] = []
    res: dict[str, Any] = {"per_test": per_test, "error": None, "detail": None, "test_times": []}
    timeout = job["timeout"]
    marks = [time.monotonic()]  # the start, then the end of the load and of each test
    # load: compile (and, for call/assert, run the top level)
    try:
        ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
        names = load(ch)
        marks.append(time.monotonic())
    except RemoteError as e:
        stage = getattr(e, "stage", None)
        compile_error = stage == "compile" or (stage == "load" and e.detail is None)
        res.update(error=e.info, detail=e.detail if not compile_error else None,
                   outcome=oc.COMPILE_ERROR if compile_error else oc.RUNTIME_ERROR)
        if stage == "exit":
            res["detail"] = oc.EXITED
        return res

    def record(code: Any, err: RemoteError | None = None) -> bool:
        """Keep the verdict; whether to run the next test. Early exit (CodeRL's): stdio stops at the
        first test not passed, call/assert at the first runtime error (the outcome class is the same)."""
        marks.append(time.monotonic())
        per_test.append(code)
        if err is not None and res["error"] is None:
            res["error"], res["detail"] = err.info, err.detail
        if ch.broken:
            return False
        if not early_exit or code is True:
            return True
        return kind != "stdio" and code is False

    if kind == "stdio":
        capture = job.get("capture") or oc.MAX_TEXT
        for inp, expected in zip(tests["inputs"], tests["outputs"]):
            if not record(*stdio_test(ch, inp, expected, timeout, res, capture)):
                break
    elif kind == "call":
        fn = [None, tests["fn_name"]]
        for inp, expected in zip(tests["inputs"], tests["outputs"]):
            ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
            try:
                value = ch.call(fn, tuple(compare.normalise_call_inputs(inp)), {})
                verdict = (compare.call_equal(value, expected), None)  # (never raises)
            except RemoteError as e:
                verdict = (-1, e)
            if not record(*verdict):
                break
    else:
        assert_tests(ch, names, tests, timeout, record)
    res["test_times"] = [round(b - a, 6) for a, b in zip(marks, marks[1:])]
    res["outcome"] = oc.aggregate(per_test) if per_test else oc.RUNTIME_ERROR
    return res


def load(ch: Channel) -> dict[str, Any]:
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
        stage = reply.get("stage")
        raise _staged(RemoteError(*_error_info(reply)), stage if stage in ("compile", "load", "exit") else "protocol")
    names = reply.get("names", {})
    return names if isinstance(names, dict) else {}


def stdio_test(ch: Channel, inp: str, expected: Any, timeout: float, res: dict, capture: int = oc.MAX_TEXT) -> tuple:
    """One stdin/stdout test; ``capture``: characters of its stdout kept in the result."""
    try:
        r = ch.ask({"op": "stdio", "input": inp, "timeout": timeout}, timeout + GRACE)
    except RemoteError as e:
        return -1, e
    stdout = r.get("stdout") if isinstance(r.get("stdout"), str) else ""
    res["captured"] = oc.truncate(stdout, capture)
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
    status = r.get("exit")
    if type(status) is int and status != 0 and not isinstance(r.get("error"), dict):  # exit status,
        return -1, RemoteError({"type": "ExitStatus", "message": f"exit status {status}",  # no exception
                                "line": None}, oc.EXITED)
    if status not in (0, None) or r.get("error"):
        return -1, RemoteError(*_error_info(r))
    if r.get("truncated"):
        return -1, RemoteError({"type": "OutputLimit", "message": "output limit exceeded"}, oc.OUTPUT_LIMIT)
    return compare.stdio_equal(stdout, expected), None


def assert_tests(ch: Channel, names: dict, tests: dict, timeout: float, record) -> None:
    namespace: dict[str, Any] = {"__name__": "__test__"}

    def bind(names: dict) -> None:
        for name, spec in names.items():
            if not isinstance(name, str) or not isinstance(spec, dict):
                continue
            if spec.get("call"):
                namespace[name] = Proxy(ch, name, name)
            elif "value" in spec:
                with contextlib.suppress(wire.ProtocolError):
                    namespace[name] = wire.decode(spec["value"], channel=ch)

    bind(names)
    if tests.get("setup", "").strip():
        ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
        try:
            bind(ch.ask({"op": "exec", "src": tests["setup"]}).get("names", {}))
        except RemoteError as e:
            record(-1, e)
            return
    statements = list(tests.get("asserts", []))
    if tests.get("check"):
        statements.append(tests["check"] + f"\n\ncheck({tests['entry_point']})\n")
    for src in statements:
        if not record(*one_assert(ch, src, dict(namespace), timeout)):
            break


def one_assert(ch: Channel, src: str, namespace: dict, timeout: float) -> tuple:
    global _armed
    ch.test_deadline = min(ch.deadline, time.monotonic() + timeout + GRACE)
    left = max(ch.test_deadline - time.monotonic(), 0.001)
    _armed = True
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
        _armed = False  # first: an alarm already on its way is then ignored
        signal.setitimer(signal.ITIMER_REAL, 0)


_armed = False  # an alarm now is a test's timeout (else a late one, ignored)


def _alarm(*_: Any) -> None:
    if _armed:
        raise TestTimeout()


def install_alarm() -> None:
    """The asserts' per-test limit: SIGALRM, armed by ``one_assert`` only."""
    signal.signal(signal.SIGALRM, _alarm)


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
