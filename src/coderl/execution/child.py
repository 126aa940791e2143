"""The harness half that lives inside the sandbox, next to the untrusted program.

It holds no expected output and decides nothing: it loads the program, then answers its worker's
requests, one frame each:

* ``call``  – call a program function (by global name, ``[class, method]`` or handle) with decoded
  arguments; reply with the encoded return value or the exception;
* ``eq``    – compare two sandboxed objects (only when a test compares two program objects);
* ``exec``  – run test setup code (MBPP ``test_setup_code``) in the program's namespace;
* ``stdio`` – fork a fresh process that runs the whole program with the given stdin; reply with
  its stdout and how it ended.

Every reply echoes the request's ``seq`` (the load reply: 0), so the worker can tell a reply out of
turn. Only the process the worker forked answers: a copy the program forks closes its channel
ends at the fork (``forked_copy``) and exits should it come back into the harness (``reply``
checks the pid), so the original's verdict stands.

Anything here can be overwritten by the program; the worker treats every reply as a claim.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import select
import signal
import sys
import time
from typing import Any

from coderl.execution import wire

PROGRAM_FILE = "<program>"


def error_info(exc: BaseException) -> dict[str, Any]:
    """Type, message and program line of an exception (defensive: the exception is the program's)."""
    info: dict[str, Any] = {"type": "Exception", "message": "", "line": None}
    with contextlib.suppress(BaseException):
        info["type"] = str.__str__(type(exc).__name__)[:100]
        info["message"] = str(exc)[:2000]
    with contextlib.suppress(BaseException):
        if isinstance(exc, SyntaxError) and exc.filename == PROGRAM_FILE:
            info["line"] = exc.lineno
        else:
            tb = exc.__traceback__
            while tb is not None:  # the innermost frame of the program's own code
                if tb.tb_frame.f_code.co_filename == PROGRAM_FILE:
                    info["line"] = tb.tb_lineno
                tb = tb.tb_next
    if isinstance(exc, MemoryError):
        info["detail"] = "memory"
    elif isinstance(exc, RecursionError):
        info["detail"] = "recursion"
    elif isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: RLIMIT_FSIZE (Python ignores SIGXFSZ)
        info["detail"] = "output_limit"
    return info


def global_names(namespace: dict[str, Any], skip: set[str], handles: dict[int, Any]) -> dict[str, Any]:
    """What the program defined at top level: callables by name, plain values encoded."""
    names: dict[str, Any] = {}
    for name, value in list(namespace.items()):
        if name.startswith("__") or name in skip or type(value).__name__ == "module":
            continue
        try:
            names[name] = {"call": True} if callable(value) else {"value": wire.encode(value, handles)}
        except BaseException:
            continue
    return names


class Child:
    def __init__(self, load: dict[str, Any], req_fd: int, rep_fd: int, preamble: dict[str, Any] | None):
        self.load, self.req_fd, self.rep_fd = load, req_fd, rep_fd
        self.preamble = preamble or {}
        self.handles: dict[int, Any] = {}
        self.namespace: dict[str, Any] = {}
        self.code = None
        self.solution: Any = None
        self.pid = os.getpid()  # the one process that answers (not a copy the program forked)
        self.seq: Any = 0  # of the request being answered (0: the load)

    # -- replies ------------------------------------------------------------------------------
    def reply(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        if os.getpid() != self.pid:  # a copy of us, forked by the program: it ends as a script would
            os._exit(0)
        message["seq"] = self.seq
        wire.send(self.rep_fd, message)

    def fail(self, stage: str, exc: BaseException) -> None:
        self.reply({"ok": False, "stage": stage, "error": error_info(exc)})

    # -- load ---------------------------------------------------------------------------------
    def start(self) -> None:
        kind = self.load["kind"]
        self.namespace = {"__name__": "__main__" if kind == "stdio" else "solution",
                          "__builtins__": builtins, **self.preamble}
        try:
            self.code = compile(self.load["program"], PROGRAM_FILE, "exec")
        except BaseException as e:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError
            self.code = self.wrapped_stdio(e) if kind == "stdio" and not self.load.get("real_exit") else None
            if self.code is None:
                return self.fail("compile", e)
        if kind == "stdio":
            self.reply({"ok": True})
            return self.serve()
        try:
            exec(self.code, self.namespace)
            if kind == "call" and "class Solution" in self.load["program"]:
                self.solution = self.namespace["Solution"]()  # LeetCode form, as APPS does
        except SystemExit as e:
            return self.fail("exit", e)
        except BaseException as e:
            return self.fail("load", e)
        names = global_names(self.namespace, set(self.preamble), self.handles) if kind == "assert" else {}
        self.reply({"ok": True, "names": names})
        self.serve()

    def wrapped_stdio(self, error: BaseException) -> Any:
        """APPS runs stdio programs inside a function: a top-level ``return`` is legal only there."""
        if not (isinstance(error, SyntaxError) and "'return' outside function" in str(error.msg)):
            return None
        body = "".join("\t" + line + "\n" for line in self.load["program"].split("\n"))
        try:
            return compile(f"def __coderl_main__():\n{body}\n__coderl_main__()\n", PROGRAM_FILE, "exec")
        except BaseException:
            return None

    # -- requests -----------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                req = wire.recv(self.req_fd)
            except wire.ProtocolError:
                return
            self.seq = req.get("seq")
            ops = {"call": self.call, "eq": self.eq, "exec": self.exec_setup, "stdio": self.stdio}
            handler = ops.get(req.get("op"))
            if handler is None:
                return
            handler(req)

    def resolve(self, target: Any) -> Any:
        if isinstance(target, int):
            return self.handles[target]
        if isinstance(target, list):  # [None, fn_name] for APPS call-based: Solution().fn or fn
            if self.solution is not None:
                return getattr(self.solution, target[1])
            target = target[1]
        if target not in self.namespace:
            raise NameError(f"name {target!r} is not defined")
        return self.namespace[target]

    def call(self, req: dict[str, Any]) -> None:
        try:
            fn = self.resolve(req["fn"])
            args = wire.decode(req.get("args", []), self.handles)
            kwargs = wire.decode(req.get("kwargs", {"$d": []}), self.handles)
            value = fn(*args, **kwargs)
            encoded = wire.encode(value, self.handles)
        except BaseException as e:
            return self.fail("call", e)
        self.reply({"ok": True, "value": encoded})

    def eq(self, req: dict[str, Any]) -> None:
        try:
            value = bool(self.handles[req["a"]] == self.handles[req["b"]])
        except BaseException as e:
            return self.fail("call", e)
        self.reply({"ok": True, "value": value})

    def exec_setup(self, req: dict[str, Any]) -> None:
        try:
            exec(compile(req["src"], "<setup>", "exec"), self.namespace)
        except BaseException as e:
            return self.fail("setup", e)
        self.reply({"ok": True, "names": global_names(self.namespace, set(self.preamble), self.handles)})

    # -- stdin/stdout programs: one fresh process per test ------------------------------------
    def stdio(self, req: dict[str, Any]) -> None:
        with open("stdin.txt", "w", encoding="utf-8") as f:
            f.write(req["input"])
        for name in ("stdout.txt", "report.json"):
            if os.path.exists(name):
                os.unlink(name)
        start = time.monotonic()
        try:
            pid = os.fork()
        except OSError as e:
            return self.fail("call", e)
        if pid == 0:
            self._run_stdio()  # never returns
        timed_out = not _wait(pid, req["timeout"])
        if timed_out:
            _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):  # copies it forked and left running (its group): their
            os.killpg(pid, signal.SIGKILL)  # later output does not count
        elapsed = time.monotonic() - start
        limit = self.load.get("max_output", 1 << 20)
        try:
            with open("stdout.txt", "rb") as f:
                out = f.read(limit + 1)
        except OSError:
            out = b""
        report = None
        with contextlib.suppress(OSError, ValueError), open("report.json", encoding="utf-8") as f:
            report = json.loads(f.read(1 << 16))
        self.reply({"ok": True, "stdout": out[:limit].decode("utf-8", "replace"),
                    "truncated": len(out) > limit, "timeout": timed_out,
                    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "error": report if isinstance(report, dict) else None, "time": elapsed})

    def _run_stdio(self) -> None:  # pragma: no cover - runs in the forked test process
        status = 0
        me = os.getpid()  # a copy the program forks must not report for it
        try:
            os.setpgid(0, 0)
            for path, fd, flags in (("stdin.txt", 0, os.O_RDONLY),
                                    ("stdout.txt", 1, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                f = os.open(path, flags, 0o600)
                os.dup2(f, fd)
                os.close(f)
            os.close(self.req_fd)
            os.close(self.rep_fd)
            sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
            sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
            namespace = {"__name__": "__main__", "__builtins__": builtins, **self.preamble}
            try:
                exec(self.code, namespace)
            except SystemExit as e:  # exit() after printing is a normal end (as in the APPS
                if self.load.get("real_exit"):  # harness), unless the job asks for a script's status
                    status = exit_status(e)
            except BaseException as e:
                status = 1
                if os.getpid() == me:
                    with open("report.json", "w", encoding="utf-8") as f:
                        json.dump(error_info(e), f)
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
        finally:
            os._exit(status)


def exit_status(e: SystemExit) -> int:  # pragma: no cover - runs in the forked test process
    """The exit status Python gives an uncaught SystemExit (``exit("message")``: 1, printed)."""
    try:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return int(code) & 0xFF
        text = str(code)
    except BaseException:
        return 1
    with contextlib.suppress(BaseException):
        sys.stderr.flush()
    with contextlib.suppress(BaseException):
        os.write(2, text.encode("utf-8", "backslashreplace") + b"\n")
    return 1


def forked_copy(*fds: int) -> None:  # pragma: no cover - runs in a copy the program forked
    """``os.register_at_fork`` hook: a copy of the child closes its channel ends."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _wait(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (True) or ``timeout`` seconds pass (False)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = None
    if fd is not None:
        try:
            return bool(select.select([fd], [], [], timeout)[0])
        finally:
            os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return True
        time.sleep(0.001)
    return False


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, signal.SIGKILL)
