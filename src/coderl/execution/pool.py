"""The execution engine: a pool of warm, sandboxed workers, a verdict cache, and the ``Executor`` API.

    with Executor(ExecConfig()) as ex:
        result = ex.run(problem, program)                      # hidden tests, early exit
        results = ex.run_many([(problem, program, "hidden"), ...])   # all cores

Each worker starts once (under bubblewrap where installed) and forks one confined child per program
(``worker.py``); verdicts: ``verdicts.py``; isolation layers: ``sandbox.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Iterable

from coderl.execution import outcome as oc, sandbox, wire
from coderl.execution import calibration
from coderl.execution.cache import ResultCache
from coderl.execution.exec_config import ExecConfig
from coderl.execution.outcome import Result
from coderl.problems.schema import Problem

# bumped whenever a verdict can change for the same program and tests (2: a program that forks no
# longer has its harness copies answer for it; replies carry their request's seq)
HARNESS_VERSION = "coderl-exec-2"


class EngineError(RuntimeError):
    pass


class Aborted(EngineError):
    """The engine was aborted (``Executor.abort``, e.g. on Ctrl-C) while this program waited or ran."""


class Cancelled(EngineError):
    """The caller cancelled this program (``run_prepared``'s ``cancel`` was set) before its verdict."""

    poll = 0.2  # seconds between looks at the cancel flag while a program runs


def select_tests(problem: Any, which: str) -> dict[str, Any]:
    if which not in ("hidden", "example"):
        raise ValueError(f"tests must be 'hidden' or 'example', got {which!r}")
    return problem.tests if which == "hidden" else problem.example_tests


count_tests = Problem.count_tests


_ENGINE_IDS = itertools.count()

# the abort path (Ctrl-C) is bounded: waits for a killed worker, and for ``parallel``'s threads
KILL_WAIT = 3.0
ABORT_JOIN = 5.0


class _Worker:
    """One warm worker process and its pipes (engine side)."""

    def __init__(self, index: int, uid: int, config: ExecConfig, engine: int = 0):
        self.index, self.uid, self.config = index, uid, config
        self.proc: subprocess.Popen | None = None
        self.hello: dict[str, Any] = {}
        limits = config.limits
        # per engine: two engines never share a group (the worker kills its members as leftovers)
        self.cgroup = sandbox.Cgroup(f"{os.getpid()}-{engine}-{index}", pids_max=limits.max_procs + 16,
                                     memory_bytes=(limits.memory_mb * 2 + 512) << 20)
        self.isolation = ""
        self.busy = False  # a job written to it, its reply not yet read

    def start(self) -> None:
        argv, self.isolation = sandbox.worker_command(sys.executable, self.config.isolation)
        argv = argv + ["--uid", str(self.uid)]
        if "pids" in self.cgroup.controllers:
            argv += ["--pids-current", str(self.cgroup.path("pids") / "pids.current")]
        env = sandbox.worker_env() if self.isolation != "bwrap" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd="/", start_new_session=True, preexec_fn=self.cgroup.join)
        wire.set_nonblocking(self.proc.stdout.fileno())
        try:
            self.hello = wire.recv(self.proc.stdout.fileno(), deadline=time.monotonic() + 60)
        except (wire.FrameTimeout, wire.ProtocolError) as e:
            self.stop()
            raise EngineError(f"execution worker failed to start ({' '.join(argv[:3])} ...): {e}") from None

    def stop(self, wait: float = 2.0) -> None:
        """Close the worker's stdin (it exits on EOF); killed after ``wait`` s."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc.stdout.close()
        self.proc = None

    def kill(self, timeout: float = KILL_WAIT) -> None:
        """SIGKILL the worker's process group (under bwrap: its pid namespace), then what is left in
        its pids cgroup or runs as its uid. Bounded by ``timeout`` s."""
        proc = self.proc
        if proc is None:
            return
        end = time.monotonic() + timeout
        while proc.returncode is None:  # (a reaped pid is never signalled: it may be reused)
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(OSError):
                    kill(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=max(0.01, min(0.25, end - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= end:
                    break  # left to the sweeps below; its pipes are closed by ``stop``
        if "pids" in self.cgroup.controllers:
            procs = self.cgroup.path("pids") / "cgroup.procs"
            deadline = min(time.monotonic() + 2, max(end, time.monotonic() + 0.5))
            while time.monotonic() < deadline:
                try:
                    victims = [int(x) for x in procs.read_text().split()]
                except (OSError, ValueError):
                    break
                if not victims:
                    break
                for pid in victims:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
        if self.hello.get("uid") is not None:
            from coderl.execution import confine

            confine.reap_uid(self.uid, None, timeout=max(0.5, end - time.monotonic()))

    def restart(self) -> None:
        """Replace the process (dead, wedged or half-fed); EngineError when the new one does not start."""
        self.kill()
        self.stop(wait=0.1)
        self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run_frames(self, data: bytes, job_timeout: float, wake: int | None = None,
                   cancel: threading.Event | None = None) -> dict[str, Any]:
        """Send a job's two (serialised) frames, wait for the result: ``Aborted`` once ``wake`` turns
        readable, ``Cancelled`` once ``cancel`` is set. Any exception: restart the worker."""
        if self.proc is None:
            raise EngineError("the execution worker is not running")
        self.busy = True
        try:
            return self._exchange(data, job_timeout, wake, cancel)
        finally:
            self.busy = False

    def _exchange(self, data: bytes, job_timeout: float, wake: int | None,
                  cancel: threading.Event | None) -> dict[str, Any]:
        wire.send_bytes(self.proc.stdin.fileno(), data)
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + job_timeout + 30
        if wake is not None:  # the reply's first byte (a frame follows in one write) or the abort
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise wire.FrameTimeout()
                ready = select.select([fd, wake], [], [], left if cancel is None else min(left, Cancelled.poll))[0]
                if wake in ready:
                    raise Aborted("the execution engine was aborted")
                if fd in ready:
                    break
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled by the caller while it ran")
        reply = wire.recv(fd, deadline=deadline)
        if not isinstance(reply, dict) or reply.get("op") != "result":
            raise wire.ProtocolError("worker sent no result")
        return reply


def _engine_failure(message: str) -> dict[str, Any]:
    """A worker's raw result for a program the engine could not run (never cached)."""
    return {"outcome": oc.RUNTIME_ERROR, "detail": oc.ENGINE, "per_test": [],
            "error": {"type": "EngineError", "message": message, "line": None}}


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _stop_workers(workers: list[_Worker], wait: float = 2.0) -> None:
    for w in workers:
        w.stop(wait)
        w.cgroup.remove()


class Executor:
    """Runs programs against a problem's tests. Use as a context manager (starts/stops the workers)."""

    def __init__(self, config: ExecConfig | None = None):
        self.config = config or ExecConfig()
        # first: a cache path that cannot be one fails before anything is set up (CacheError)
        self.cache = ResultCache(self.config.cache_path) if self.config.cache_path else None
        self.calibration: calibration.CalibrationStore | None = None
        if self.config.time_limit == "calibrated":
            self.calibration = calibration.CalibrationStore(self.config.calibration_path or calibration.default_path())
        self._time_limits: dict[str, float] = {}  # problem id -> per-test limit (calibrated mode)
        self._gold_seconds: dict[str, float | None] = {}  # problem id -> measured gold time
        self._calibrating = threading.Lock()
        self.calibration_counts = {"measured": 0, "from_cache": 0, "no_passing_gold": 0}
        n = min(self.config.workers or 2 * (os.cpu_count() or 1), 64)
        # a dedicated uid per worker, unique per engine (the reaper kills every process of a uid)
        engine = next(_ENGINE_IDS)
        base = 200_000 + (os.getpid() % 1_000_000) * 1024 + (engine % 16) * 64
        self._workers = [_Worker(i, base + i, self.config, engine) for i in range(n)]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self.started = False
        self.isolation = ""
        self.guards: dict[str, bool] = {}
        self.restarts = 0  # workers replaced (dead, wedged, or a job failed on them)
        self.aborted = False
        self._limits_for: dict[int, dict[str, Any]] = {}  # RLIMIT_CPU -> the child's rlimits
        # written once on abort: every thread waiting for a worker's reply selects on it too
        self._wake_r, self._wake_w = os.pipe()
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    def live_workers(self) -> int:
        """Workers whose process is running now (a dead one is replaced when next used)."""
        return sum(w.alive for w in self._workers)

    def busy_workers(self) -> int:
        """Workers that hold a job now (its reply not yet read)."""
        return sum(w.busy for w in self._workers)

    def worker_pids(self) -> list[int | None]:
        """The workers' process ids (None: not running)."""
        return [w.proc.pid if w.proc is not None else None for w in self._workers]

    @property
    def uids(self) -> list[int]:
        """The unprivileged uids programs run as (one per worker), when the engine can drop to them."""
        return [w.uid for w in self._workers] if self.guards.get("uid_drop") else []

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "Executor":
        self.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if (exc_type is not None and not issubclass(exc_type, Exception) and self.started
                and not self.aborted):  # Ctrl-C outside ``parallel``: stop now all the same
            self.abort()
        self.close()

    def start(self) -> None:
        if self.started:
            return
        for w in self._workers:
            w.start()
            self._idle.put(w)
        self.started = True
        # an engine that is never closed still stops its workers and removes its cgroups at exit
        self._finalizer = weakref.finalize(self, _stop_workers, list(self._workers))
        self._describe()

    def abort(self) -> None:
        """Stop now (Ctrl-C): kill every worker; programs in flight raise ``Aborted``. Bounded."""
        self.aborted = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")  # readers waiting for a reply return at once
        end = time.monotonic() + KILL_WAIT
        for w in self._workers:
            w.kill(timeout=max(0.2, end - time.monotonic()))

    def parallel(self, fn: Any, items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]`` on one thread per worker; the first error stops the rest and
        is raised; Ctrl-C also aborts the engine (daemon threads: none keeps the interpreter up)."""
        items = list(items)
        out: list[Any] = [None] * len(items)
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(len(items)):
            todo.put(i)
        errors: list[BaseException] = []
        stop = threading.Event()
        finished = threading.Semaphore(0)

        def run() -> None:
            try:
                while not stop.is_set():
                    try:
                        i = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        out[i] = fn(items[i])
                    except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                        errors.append(e)
                        stop.set()
                        return
            finally:
                finished.release()

        threads = [threading.Thread(target=run, daemon=True, name=f"coderl-exec-{k}")
                   for k in range(max(1, min(self.worker_count, len(items))))]
        try:
            for t in threads:
                t.start()
            for _ in threads:
                while not finished.acquire(timeout=0.2):
                    pass
        except BaseException:
            stop.set()
            self.abort()
            # the threads come back at once (their waits end on abort); never wait unboundedly
            deadline = time.monotonic() + ABORT_JOIN
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            raise
        if errors:
            raise errors[0]
        return out

    def close(self) -> None:
        _stop_workers(self._workers, wait=0.2 if self.aborted else 2.0)  # (aborted: already killed)
        self.started = False
        self._close_stores()

    def _close_stores(self) -> None:
        for store in (self.cache, self.calibration):
            if store is not None:
                store.close()
        self.cache = self.calibration = None

    def _describe(self) -> None:
        from coderl.execution.confine import namespace as own

        w = self._workers[0]
        h = w.hello
        self.guards = {
            "bwrap": w.isolation == "bwrap",
            "pid_namespace": bool(h.get("pid_ns")) and h.get("pid_ns") != own("pid"),
            "net_namespace": bool(h.get("net_ns")) and h.get("net_ns") != own("net"),
            "mount_namespace": bool(h.get("mnt_ns")) and h.get("mnt_ns") != own("mnt"),
            "uid_drop": h.get("uid") is not None,  # RLIMIT_NPROC applies; cannot signal the workers
            "pids_cgroup": "pids" in w.cgroup.controllers,
            "memory_cgroup": "memory" in w.cgroup.controllers,
        }
        parts = [w.isolation] + [k for k in ("uid_drop", "pids_cgroup", "memory_cgroup") if self.guards[k]]
        self.isolation = "+".join(parts)
        if w.isolation != "bwrap":
            import warnings
            warnings.warn(f"coderl.execution: running WITHOUT namespaces (isolation={self.isolation})",
                          RuntimeWarning, stacklevel=3)

    # -- running ------------------------------------------------------------------------------
    def job_for(self, problem: Any, program: str, which: str = "hidden", early_exit: bool | None = None,
                *, timeout: float | None = None, memory_mb: int | None = None, max_job_seconds: float | None = None,
                capture: int | None = None, real_exit: bool = False) -> tuple[dict, dict, str, int]:
        """The ``job`` and ``tests`` frames for the worker, the cache key and the number of tests.
        ``timeout``: the per-test limit (default ``time_limit(problem)``); ``memory_mb``: another
        address-space limit; ``max_job_seconds``: a cap on the whole budget; ``capture``: characters
        of a stdio program's stdout kept (at most ``max_output_kb``); ``real_exit``: ``sys.exit(n)``
        is the exit status (APPS's rule). The last four enter the job (and its hash) only when given."""
        tests = select_tests(problem, which)
        kind = problem.kind
        n = count_tests(tests, kind)
        cfg = self.config
        per_test = self.time_limit(problem) if timeout is None else timeout
        job_timeout = cfg.job_timeout or (per_test + 1) * (n + 1)
        if max_job_seconds is not None:
            job_timeout = min(job_timeout, max_job_seconds)
        limits = self._limits(job_timeout)
        if memory_mb is not None and memory_mb != limits["memory_mb"]:
            limits = {**limits, "memory_mb": int(memory_mb)}
        job = {"op": "job", "program": program, "kind": kind,
               "apps_preamble": cfg.apps_preamble and problem.source == "apps",
               "limits": limits, "timeout": per_test, "job_timeout": job_timeout,
               "max_output": cfg.max_output_kb << 10}
        if capture is not None:
            job["capture"] = max(oc.MAX_TEXT, min(int(capture), cfg.max_output_kb << 10))
        if real_exit:
            job["real_exit"] = True
        frame = {"early_exit": cfg.early_exit if early_exit is None else early_exit}
        if kind in ("stdio", "call"):
            frame.update(inputs=tests.get("inputs", []), outputs=tests.get("outputs", []))
            if kind == "call":
                frame["fn_name"] = tests.get("fn_name") or problem.entry_point
        else:
            frame.update(setup=tests.get("setup") or "", asserts=tests.get("asserts", []),
                         check=tests.get("check"), entry_point=problem.entry_point)
        key = hashlib.sha256(json.dumps([HARNESS_VERSION, {k: v for k, v in job.items() if k != "op"}, frame],
                                        sort_keys=True, default=repr).encode("utf-8")).hexdigest()
        return job, frame, key, n

    # -- time limits ---------------------------------------------------------------------------
    def time_limit(self, problem: Any) -> float:
        """The per-test limit of ``problem``: ``timeout``, or its calibrated limit."""
        if self.calibration is None:
            return self.config.timeout
        pid = str(problem.id)
        return self._time_limits[pid] if pid in self._time_limits else self.calibrate([problem])[pid]

    def calibrate(self, problems: Iterable[Any]) -> dict[str, float]:
        """Calibrated per-test limits of ``problems`` (id -> seconds), read or measured and stored."""
        cfg = self.config
        if self.calibration is None:
            return {str(p.id): cfg.timeout for p in problems}
        problems = list({str(p.id): p for p in problems}.values())
        with self._calibrating:  # one measurement per problem, whoever asks first
            todo = []
            for p in problems:
                if str(p.id) in self._time_limits:
                    continue
                key = self._gold_key(p)
                found, seconds = self.calibration.get(key) if key else (True, None)
                if found:
                    self._set_limit(p, seconds, measured=False)
                else:
                    todo.append((p, key))
            if todo:
                if not self.started:
                    self.start()
                measure = lambda item: self._measure_gold(*item)  # noqa: E731
                for (p, key), (seconds, outcome) in zip(todo, self.parallel(measure, todo)):
                    if outcome != "engine_error":  # (never stored: the next run measures again)
                        self.calibration.put(key, str(p.id), seconds, outcome)
                    self._set_limit(p, seconds, measured=True)
        return {str(p.id): self._time_limits[str(p.id)] for p in problems}

    def _gold_key(self, problem: Any) -> str | None:
        """The hash of the gold measurement job (None: no gold program or no hidden tests)."""
        gold = problem.solutions[0] if getattr(problem, "solutions", None) else None
        if not gold or not count_tests(problem.tests, problem.kind):
            return None
        return "gold|" + self.job_for(problem, gold, "hidden", early_exit=False, timeout=self.config.timeout)[2]

    def _measure_gold(self, problem: Any, key: str) -> tuple[float | None, str]:
        """The first gold program's slowest test (or load) in seconds (None: not passed), and its outcome."""
        job, frame, _, _ = self.job_for(problem, problem.solutions[0], "hidden", early_exit=False,
                                        timeout=self.config.timeout)
        raw = self._dispatch(job, frame)
        outcome = raw.get("outcome", oc.RUNTIME_ERROR)
        if outcome != oc.PASSED or raw.get("detail") == oc.ENGINE:
            return None, outcome if raw.get("detail") != oc.ENGINE else "engine_error"
        times = [t for t in raw.get("test_times") or [] if isinstance(t, (int, float))]
        return (max(times) if times else float(raw.get("wall_time", self.config.timeout))), outcome

    def _set_limit(self, problem: Any, seconds: float | None, measured: bool) -> None:
        cfg = self.config
        pid = str(problem.id)
        self._gold_seconds[pid] = seconds
        self._time_limits[pid] = calibration.limit_from(seconds, cfg.calibrate_factor, cfg.calibrate_floor, cfg.timeout)
        if seconds is None:
            self.calibration_counts["no_passing_gold"] += 1
        else:
            self.calibration_counts["measured" if measured else "from_cache"] += 1

    def backend_info(self) -> dict[str, Any]:
        """Where programs ran (for summaries)."""
        return {"backend": "local", "workers": self.worker_count}

    def time_limit_summary(self) -> dict[str, Any]:
        """For a stage summary: the mode and, when calibrated, how the problems' limits came about."""
        cfg = self.config
        if self.calibration is None:
            return {"mode": "fixed", "seconds": cfg.timeout}
        limits = sorted(self._time_limits.values())
        return {"mode": "calibrated", "factor": cfg.calibrate_factor, "floor": cfg.calibrate_floor,
                "cap": cfg.timeout, "problems": len(limits), **self.calibration_counts,
                "median_limit": limits[len(limits) // 2] if limits else None,
                "calibration_file": str(self.calibration.path)}

    def _limits(self, job_timeout: float) -> dict[str, Any]:
        """The child's rlimits (RLIMIT_CPU just above the wall-clock budget), cached per RLIMIT_CPU."""
        cpu = min(self.config.limits.cpu_seconds, math.ceil(job_timeout) + 1)
        limits = self._limits_for.get(cpu)
        if limits is None:
            limits = dataclasses.asdict(self.config.limits)
            limits["cpu_seconds"] = cpu
            if len(self._limits_for) >= 256:
                self._limits_for.clear()
            self._limits_for[cpu] = limits
        return limits

    def run(self, problem: Any, program: str, tests: str = "hidden", early_exit: bool | None = None,
            index: int = 0) -> Result:
        """Run ``program`` on ``problem``'s hidden or example tests."""
        return self.run_prepared(problem, self.job_for(problem, program, tests, early_exit), tests, index)

    def run_prepared(self, problem: Any, prepared: tuple[dict, dict, str, int], tests: str = "hidden",
                     index: int = 0, cancel: threading.Event | None = None) -> Result:
        """Run a job ``job_for`` prepared (cache first, then a worker). ``cancel``: once set, the
        program is not started, or stopped (its worker replaced): ``Cancelled``."""
        if not self.started:
            self.start()
        job, frame, key, n = prepared
        if n == 0:
            raise ValueError(f"problem {problem.id} has no {tests} tests")
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                hit.update(problem_id=str(problem.id), index=index, cached=True)
                return Result.from_dict(hit)
        raw = self._dispatch(job, frame, cancel)
        per_test = raw.get("per_test", [])
        err = raw.get("error") or {}
        result = Result(problem_id=str(problem.id), index=index, outcome=raw.get("outcome", oc.RUNTIME_ERROR),
                        tests_passed=sum(1 for v in per_test if v is True), tests_total=n, per_test=per_test,
                        error_type=err.get("type"), error_message=oc.truncate(err.get("message")) or None,
                        error_line=err.get("line"),
                        stdout=oc.truncate(raw.get("stdout", ""), job.get("capture") or oc.MAX_TEXT),
                        stderr=oc.truncate(raw.get("stderr", "")), wall_time=round(raw.get("wall_time", 0.0), 4),
                        hash=key, isolation=self.isolation, detail=raw.get("detail"), tests=tests)
        if self.cache is not None and result.detail != oc.ENGINE:
            self.cache.put(key, result.to_dict())
        return result

    def _dispatch(self, job: dict, frame: dict, cancel: threading.Event | None = None) -> dict[str, Any]:
        """The worker's raw result for the job, on an idle worker. Both frames are serialised first (a
        job that cannot be encoded leaves the worker untouched); a worker the job may have reached
        is replaced on any failure. Two tries, then an engine error (never a verdict)."""
        try:
            data = wire.frame(job) + wire.frame(frame)
        except (ValueError, TypeError, RecursionError) as e:  # (UnicodeEncodeError is a ValueError)
            return _engine_failure(f"the job cannot be sent to a worker: {type(e).__name__}: {e}")
        errors: list[str] = []
        for _ in range(2):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled by the caller before it ran")
            w = self._take()
            try:
                if self.aborted:
                    raise Aborted("the execution engine was aborted")
                if not w.alive and not self._replace(w, errors):  # died between programs, or an
                    continue                                       # earlier restart failed
                return w.run_frames(data, job["job_timeout"], self._wake_r, cancel)
            except Aborted:
                raise
            except Cancelled:  # stopped mid-job: the worker is half-way through it
                self._replace(w, errors)
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, the worker is suspect
                if self.aborted:
                    raise Aborted("the execution engine was aborted") from None
                errors.append(f"{type(e).__name__}: {e}")
                self._replace(w, errors)
            finally:
                self._idle.put(w)
        return _engine_failure("worker failed twice: " + "; ".join(errors))

    def _take(self) -> _Worker:
        while True:
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                if self.aborted:
                    raise Aborted("the execution engine was aborted") from None

    def _replace(self, w: _Worker, errors: list[str]) -> bool:
        """Restart ``w``; a failed restart (the next use tries again) is noted in ``errors``: False."""
        try:
            w.restart()
        except Exception as e:  # noqa: BLE001 - EngineError, OSError (EMFILE), ...
            errors.append(f"restart: {type(e).__name__}: {e}")
            return False
        self.restarts += 1
        return True

    def run_many(self, items: Iterable[tuple[Any, str, str]], early_exit: bool | None = None,
                 progress: Any = None) -> list[Result]:
        """Run (problem, program, which) triples on all workers; results in input order (``index``:
        position); identical jobs run once (copies ``cached=True``); ``progress(result)`` per item."""
        items = list(items)
        if not self.started:
            self.start()
        if self.calibration is not None:  # all the batch's gold programs measured in parallel, first
            self.calibrate(problem for problem, _, _ in items)
        first: dict[str, int] = {}
        twin_of: list[int] = []
        prepared: list[tuple[dict, dict, str, int]] = []  # each job built (and hashed) once
        for i, (problem, program, which) in enumerate(items):
            prepared.append(self.job_for(problem, program, which, early_exit))
            twin_of.append(first.setdefault(prepared[-1][2] + "|" + str(problem.id), i))

        def one(i: int) -> Result:
            problem, _, which = items[i]
            r = self.run_prepared(problem, prepared[i], which, i)
            if progress is not None:
                progress(r)
            return r

        unique = [i for i, t in enumerate(twin_of) if t == i]
        done = dict(zip(unique, self.parallel(one, unique)))
        out = [done[i] if t == i else dataclasses.replace(done[t], index=i, cached=True) for i, t in enumerate(twin_of)]
        for i, t in enumerate(twin_of):
            if t != i and progress is not None:
                progress(out[i])
        return out
