"""A warm worker: one long-lived (sandboxed) Python process that runs programs one at a time.

Each program runs in a confined child forked *ahead of time* by the fork server (``zygote.py``);
it receives the program over its pipe, never the expected outputs (the worker reads them after
the fork; ``verdicts.judge`` decides here, on decoded plain data). ``finish`` cleans up after the
result is sent, then forks the next child.

Protocol with the engine (stdin/stdout, ``wire`` frames): a ``hello`` frame on start; then per
program a ``job`` frame, a ``tests`` frame, and one ``result`` frame back. EOF on stdin ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import os
import signal
import sys
import time
from typing import Any

from coderl.execution import codes as oc, confine, verdicts, wire
from coderl.execution.child import Child, forked_copy
from coderl.execution.verdicts import Channel
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


def load_apps_preamble() -> dict[str, Any]:
    """APPS's import block, loaded by the zygote on the first APPS program (others fork faster)."""
    preamble: dict[str, Any] = {}
    exec(APPS_PREAMBLE, preamble)
    preamble.pop("__builtins__", None)
    gc.freeze()
    return preamble


class Worker:
    def __init__(self, uid: int | None, root: str, pids_current: str | None = None):
        self.uid, self.root = uid, root
        self.apps = False  # children get the APPS preamble (from the first APPS program on)
        self.pending: tuple[int | None] | None = None  # (child pid,) of the last program, until finish()
        self.spare: tuple[int, int, int] | None = None  # pre-forked child: pid, req_w, rep_r
        self.status: int | None = None
        self.workdir = os.path.join(root, "work")  # private to the program (mode 700, its uid)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        # the program's stdout/stderr, outside its directory: dup'ed onto its fds 1/2, read with pread
        self.out_fd, self.err_fd = (os.open(os.path.join(root, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                                    for name in ("stdout", "stderr"))
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.own_pid_namespace = os.getpid() <= 3  # bwrap's init is pid 1, we are its child
        confine.prepare_worker(self.workdir, uid)
        # cgroup pids.current (kept open, read by pread): no uid reaper when nothing was left behind
        self.pids_current = pids_current if pids_current and os.path.exists(pids_current) else None
        self.pids_fd = os.open(self.pids_current, os.O_RDONLY) if self.pids_current else None
        self.warm_up()
        gc.freeze()  # forked children then do not copy the worker's objects when they collect
        self.zygote = Zygote(self._child, load_apps_preamble, (self.out_fd, self.err_fd, self.devnull),
                             die_with_worker=not self.own_pid_namespace)
        self.baseline = self._pids()  # this worker, its zygote (and, under bwrap, its init)
        verdicts.install_alarm()  # (after the zygote's fork: it and its children keep the default)

    @staticmethod
    def warm_up() -> None:
        """Run the children's code path in-process, so that forked children do not pay first-use costs
        (compiler, codecs, the harness's specialised bytecode: else page faults in each child)."""
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
        """Have the zygote fork the child for the *next* program (off the critical path)."""
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
        confine.enter_child(workdir=self.workdir, uid=self.uid, keep_fds=(req_r, rep_w), stdout=self.out_fd,
                            stderr=self.err_fd, devnull=self.devnull, die_with_worker=not self.own_pid_namespace)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        job = wire.recv(req_r)
        confine.apply_limits(job["limits"], self.uid is not None)
        if job.get("kind") != "stdio":  # (stdio programs run in a fresh process per test anyway)
            os.register_at_fork(after_in_child=functools.partial(forked_copy, req_r, rep_w))
        Child(job, req_r, rep_w, preamble).start()

    def _reset_output(self) -> None:
        """Empty the output files for the next child (offset rewound, status flags cleared)."""
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
            with contextlib.suppress(OSError, wire.FrameTimeout):  # a dead spare: the load reports it
                wire.send(req_w, job, deadline=channel.deadline)
            tests = wire.recv(tests_fd)  # the child is already forked: it never holds these
            result = verdicts.judge(job, tests, channel)
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
        """After the result is sent: reap and kill what the program left, clean up, fork the next child."""
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
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
        self.pending = None
        if self.spare is None:
            self.spawn()

    def kill_leftovers(self) -> None:
        """Kill what the program left: the pids cgroup's members, else ``kill(-1)`` as its uid."""
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
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _reap_zombies()
            if not victims:
                return
            time.sleep(0.001)

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
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(top, name))
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(top, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _tail(fd: int, limit: int = oc.MAX_TEXT) -> str:
    """The end of an output file (pread: its offset is shared with the program's processes)."""
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - 4 * limit)
        return oc.truncate(os.pread(fd, size - start, start).decode("utf-8", "replace"), limit)
    except OSError:
        return ""


def probe() -> dict[str, Any]:
    ns = confine.namespace
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
    wire.send(parent_out, {**probe(), "uid": uid})
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
