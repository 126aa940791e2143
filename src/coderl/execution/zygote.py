"""The worker's fork server ("zygote"): the process that forks the confined children.

Why: a child shares its parent's memory copy-on-write, so every page the worker's Python wrote
while a child lived was copied again per program (~290 page faults, a third of the worker's CPU).
The zygote is forked once, after warm-up, and its tiny loop touches few pages.

Protocol (a SOCK_SEQPACKET pair, one datagram per message; the worker asks, the zygote answers):

* ``fork`` with two fds attached (the child's ends of its request and reply pipes) and a flag,
  "load the APPS preamble first" -> the child's pid (or -errno: fork failed; ``PREAMBLE_FAILED``);
* ``wait`` pid -> its wait status (-1: not a child of the zygote);
* EOF: the zygote exits.

The worker kills the children itself (by process group: their pids stay reserved until it asks
the zygote to wait); what a program leaves behind is re-parented to the worker (a subreaper).
"""

from __future__ import annotations

import _socket
import contextlib
import gc
import os
import signal
import struct
from typing import Any, Callable

_REQUEST = struct.Struct("=ci")  # op (b"f" fork, b"w" wait), argument (preamble flag / pid)
_REPLY = struct.Struct("=i")
_FDS = struct.Struct("=2i")
_ANCILLARY = _socket.CMSG_SPACE(_FDS.size)
PREAMBLE_FAILED = -10_000

ChildMain = Callable[[int, int, "dict[str, Any] | None"], None]


class Zygote:
    """Worker side. ``child(req_r, rep_w, preamble)`` runs in each forked child; ``load_preamble()``
    imports the APPS preamble on first need; ``keep_fds``: the worker's fds the children need."""

    def __init__(self, child: ChildMain, load_preamble: Callable[[], dict[str, Any]],
                 keep_fds: tuple[int, ...], die_with_worker: bool):
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        worker = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote
            try:
                ours.close()
                if die_with_worker:
                    from coderl.execution import confine

                    confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
                    if os.getppid() != worker:
                        os._exit(0)
                _serve(theirs, child, load_preamble, keep_fds)
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock = pid, ours

    def fork(self, req_r: int, rep_w: int, preamble: bool) -> int:
        """Fork a child holding ``req_r``/``rep_w`` (the caller still closes its own copies)."""
        self.sock.sendmsg([_REQUEST.pack(b"f", preamble)],
                          [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _FDS.pack(req_r, rep_w))])
        pid = self._reply()
        if pid == PREAMBLE_FAILED:
            raise OSError("the APPS preamble failed to import in the zygote")
        if pid < 0:
            raise OSError(-pid, f"the zygote could not fork: {os.strerror(-pid)}")
        return pid

    def wait(self, pid: int) -> int | None:
        """Reap a child (blocks until it exits: kill it first); its wait status."""
        self.sock.send(_REQUEST.pack(b"w", pid))
        status = self._reply()
        return status if status >= 0 else None

    def _reply(self) -> int:
        data = self.sock.recv(_REPLY.size)
        if len(data) != _REPLY.size:
            raise OSError("the zygote is gone")
        return _REPLY.unpack(data)[0]

    def close(self) -> None:
        """Stop the zygote (it exits on EOF) and reap it."""
        self.sock.close()
        with contextlib.suppress(ChildProcessError):  # (already reaped among the orphans)
            os.waitpid(self.pid, 0)


def _serve(sock: Any, child: ChildMain, load_preamble: Callable[[], dict[str, Any]],
           keep_fds: tuple[int, ...]) -> None:  # pragma: no cover - runs in the zygote
    """The zygote's loop. Kept minimal: every page it writes while a child is alive is copied."""
    keep = sorted({0, 1, 2, sock.fileno(), *keep_fds})
    for low, high in zip(keep, keep[1:] + [65536]):  # the engine's pipes among them
        os.closerange(low + 1, high)
    gc.freeze()
    preamble: dict[str, Any] | None = None
    while True:
        try:
            message, ancillary, _, _ = sock.recvmsg(_REQUEST.size, _ANCILLARY)
        except OSError:
            return
        if len(message) != _REQUEST.size:
            return  # EOF: the worker is done
        op, arg = _REQUEST.unpack(message)
        if op == b"w":
            try:
                status = os.waitpid(arg, 0)[1]
            except ChildProcessError:
                status = -1
            sock.send(_REPLY.pack(status))
            continue
        req_r, rep_w = _FDS.unpack(ancillary[0][2])
        pid = PREAMBLE_FAILED
        if arg and preamble is None:
            with contextlib.suppress(BaseException):
                preamble = load_preamble()
        if preamble is not None or not arg:
            try:
                pid = os.fork()
            except OSError as e:
                pid = -(e.errno or 1)
            if pid == 0:
                try:
                    sock.close()
                    child(req_r, rep_w, preamble)
                finally:
                    os._exit(0)
        os.close(req_r)
        os.close(rep_w)
        sock.send(_REPLY.pack(pid))
