"""Confinement of one forked child, done inside the worker (kept free of heavy imports: the worker
process stays small, and a small process forks fast). See ``sandbox.py`` for the whole picture."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def can_drop_uid() -> bool:
    return os.geteuid() == 0


def namespace(name: str) -> str | None:
    """This process's ``name`` namespace (``pid``, ``net``, ``mnt``), as /proc names it."""
    try:
        return os.readlink(f"/proc/self/ns/{name}")
    except OSError:
        return None


def prepare_worker(workdir: str, uid: int | None) -> None:
    """Once per worker, what every child would otherwise redo after each fork."""
    if uid is not None:
        os.chown(workdir, uid, uid)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                       "HOME": workdir, "TMPDIR": workdir, "OPENBLAS_NUM_THREADS": "1"})
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid binary can give a program privileges back


def enter_child(*, workdir: str, uid: int | None, keep_fds: tuple[int, ...],
                stdout: int, stderr: int, devnull: int, die_with_worker: bool = True) -> None:
    """Confine the freshly forked process before the program is received. ``stdout``/``stderr``: the
    worker's own files, outside ``workdir`` (the program cannot reach or swap them by path)."""
    os.setsid()
    if die_with_worker:  # (in a pid namespace the worker's death ends the namespace anyway)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # fds: 0 <- /dev/null, 1/2 -> the worker's output files, the channels kept, the rest closed
    for fd, target in ((devnull, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    keep = sorted({0, 1, 2, *keep_fds})
    for low, high in zip(keep, keep[1:] + [65536]):
        os.closerange(low + 1, high)
    os.chdir(workdir)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def apply_limits(limits: dict, uid_dropped: bool) -> None:
    """Set soft = hard rlimits (``limits``: ``Limits``'s fields); the program cannot raise them."""
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_CPU, limits["cpu_seconds"]),
                       (resource.RLIMIT_AS, limits["memory_mb"] * mb),
                       (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
                       (resource.RLIMIT_NOFILE, limits["open_files"]),
                       (resource.RLIMIT_CORE, 0),
                       # RLIMIT_NPROC counts every process of the uid: only meaningful for our own uid
                       (resource.RLIMIT_NPROC, limits["max_procs"] if uid_dropped else -1)):
        if value < 0:
            continue
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))


def reap_uid(uid: int | None, pgid: int | None, timeout: float | None = None) -> None:
    """Kill what the program left: its process group, then every process of its uid."""
    if pgid is not None:  # the group, and the process itself should it not have made its group yet
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pgid, signal.SIGKILL)
    if uid is None:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in a short-lived child
        with contextlib.suppress(BaseException):
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):  # as the program's uid: only its processes, never ours
                os.kill(-1, signal.SIGKILL)
        os._exit(0)
    if timeout is None:
        os.waitpid(pid, 0)
        return
    if _reaped(pid, timeout):
        return
    with contextlib.suppress(OSError):  # wedged (it never should be): kill it, reap it if quick
        os.kill(pid, signal.SIGKILL)
    _reaped(pid, 0.5)


def _reaped(pid: int, timeout: float) -> bool:
    """Poll for ``pid``'s exit (reaping it) for ``timeout`` seconds, at least once."""
    end = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.005)
