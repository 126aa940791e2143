"""The bridge between HTTP requests and the sandboxed ``Executor``: admission, limits, threads.

A request's programs are *admitted* all at once or not at all: at most ``workers + max_queue``
programs are admitted at any time (running or waiting for a worker); past that the request is
refused with :class:`Busy` (HTTP 429) and nothing of it is queued. A request that could never be
admitted (more distinct programs than that bound) is refused with :class:`NeverFits` (HTTP 422).
Admitted programs run on a thread pool with one thread per execution worker, so ``in_flight``
never exceeds the workers and ``queue_depth`` is what waits. A program's slot is given back when
it finishes, or when it is cancelled (its client went away: ``run`` cancelled): a program not yet
started is dropped, one running is stopped (its worker replaced) within moments.

Per-request limits are capped by the server's (``effective_limits``), a program's whole budget by
``max_job_seconds``. Every program goes through ``Executor`` — the same job, sandbox and verdicts
as ``coderl execute`` — prepared by ``Executor.job_for`` with the request's limits (they enter the
job and so its hash) and run by ``Executor.run_prepared``.

The engine does not use ``Executor.run_many`` (its dedup and threads): a request's programs must be
admitted, counted and cancellable one by one, and many requests share one pool of threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

from coderl.config import ConfigError
from coderl.execution import codes as oc
from coderl.execution.exec_config import ExecConfig
from coderl.execution.outcome import Result
from coderl.execution.pool import Cancelled, Executor, count_tests, select_tests
from coderl.problems.schema import Problem
from coderl.serve.metrics import Metrics
from coderl.serve.serve_config import ServeConfig, isolation_problem

MIN_MEMORY_MB = 256  # ExecConfig's own floor: the interpreter alone maps ~100 MB


class Busy(Exception):
    """The admission bound is reached: the request was refused whole (HTTP 429)."""


class NeverFits(Exception):
    """A request this server can never run as sent (HTTP 422 naming ``field``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Job:
    """One program on one problem's test set, under limits already capped by the server's.
    ``capture``/``real_exit``: see ``Executor.job_for`` (``POST /run_code`` sets them)."""

    problem: Problem
    program: str
    which: str = "hidden"
    timeout: float | None = None
    memory_mb: int | None = None
    early_exit: bool | None = None
    capture: int | None = None
    real_exit: bool = False

    def key(self) -> tuple:
        """Jobs with equal keys give the same verdict (the same problem object, program, limits)."""
        return (id(self.problem), self.program, self.which, self.timeout, self.memory_mb, self.early_exit,
                self.capture, self.real_exit)


class Engine:
    """An ``Executor`` behind a bounded admission counter and a thread pool (one thread per worker)."""

    def __init__(self, config: ExecConfig, serve: ServeConfig):
        if config.time_limit != "fixed":
            raise ConfigError("execution.time_limit: the service runs fixed per-test limits (a served "
                              "problem carries no gold program to calibrate on); use time_limit=fixed")
        self.config, self.serve, self.max_queue = config, serve, serve.max_queue
        self.executor = Executor(config)
        self.workers = self.executor.worker_count  # (min(config.workers or 2 x cores, 64))
        self.capacity = self.workers + serve.max_queue
        if serve.max_programs > self.capacity:
            raise ConfigError(f"serve.max_programs: {serve.max_programs} programs per request, but the service "
                              f"admits at most {self.capacity} at once ({self.workers} workers + max_queue "
                              f"{serve.max_queue}): such a request could never run. Lower --max-programs or "
                              f"raise --max-queue")
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self.admitted = 0  # programs running or waiting for a worker
        self.running = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers (idempotent). Raises ConfigError, the workers stopped again, when the
        sandbox lacks the guards a service needs (``serve_config.isolation_problem``)."""
        if self._pool is not None:
            return
        self.executor.start()
        problem = isolation_problem(self.executor.guards, self.config.isolation)
        if problem is not None:
            self.executor.close()
            raise ConfigError(problem)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="coderl-serve")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.executor.close()

    # -- limits and admission -----------------------------------------------------------------
    def effective_limits(self, timeout: float | None, memory_mb: int | None) -> tuple[float, int]:
        """The per-test seconds and memory MB a request gets: its own, capped by the server's
        (memory at least MIN_MEMORY_MB); the server's where it gives none."""
        cap_t, cap_m = self.config.timeout, self.config.limits.memory_mb
        t = cap_t if timeout is None else min(float(timeout), cap_t)
        m = cap_m if memory_mb is None else max(MIN_MEMORY_MB, min(int(memory_mb), cap_m))
        return t, m

    def check_problem(self, problem: Problem, which: str, stdin_field: str | None = None) -> None:
        """Refuse (NeverFits) a test set past ``max_tests``, or a stdin the sandbox could not even
        write: the harness writes each input to a file under the program's RLIMIT_FSIZE, so a larger
        one would fail as if by the program's fault. ``stdin_field``: the request's name for a lone input."""
        tests = select_tests(problem, which)
        where = "problem.tests" if which == "hidden" else "problem.example_tests"
        n = count_tests(tests, problem.kind)
        if n > self.serve.max_tests:
            raise NeverFits(where, f"{n} tests, at most {self.serve.max_tests} per problem (--max-tests)")
        if problem.kind != "stdio":
            return
        limit = self.config.limits.file_size_mb << 20
        for i, text in enumerate(tests.get("inputs", [])):
            size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else 0
            if size > limit:
                raise NeverFits(stdin_field or f"{where}.inputs.{i}",
                                f"{size} bytes of stdin, more than the sandbox's file size limit "
                                f"({self.config.limits.file_size_mb} MB, execution.limits.file_size_mb)")

    def _admit(self, n: int) -> None:
        if n > self.capacity:
            raise NeverFits("programs", f"{n} distinct programs, more than this service ever admits at once "
                                        f"({self.capacity}: {self.workers} workers + max_queue "
                                        f"{self.max_queue}); send at most {self.capacity} per request")
        with self._lock:
            if self.admitted + n > self.capacity:
                raise Busy(f"busy: {self.admitted} programs admitted, room for {self.capacity} "
                           f"({self.workers} workers + max_queue {self.max_queue}); {n} more refused, retry later")
            self.admitted += n

    def _release(self, future: Any = None) -> None:
        with self._lock:
            self.admitted -= 1
        if future is not None and future.cancelled():
            self.metrics.cancelled()

    def state(self) -> dict[str, Any]:
        with self._lock:
            admitted, running = self.admitted, self.running
        return {"queue_depth": admitted - running, "in_flight": running, "admitted": admitted,
                "capacity": self.capacity, "workers": self.workers, "max_queue": self.max_queue,
                "live_workers": self.executor.live_workers(), "worker_restarts": self.executor.restarts,
                "isolation": self.executor.isolation, "guards": dict(self.executor.guards)}

    def health(self) -> dict[str, Any]:
        """``GET /health``: ok while at least one worker is running, and the request bounds a
        client sizes its batches by."""
        live = self.executor.live_workers() if self._pool is not None else 0
        return {"status": "ok" if live else "unavailable", "workers": self.workers, "live_workers": live,
                "isolation": self.executor.isolation, "max_programs": self.serve.max_programs,
                "capacity": self.capacity, "max_tests": self.serve.max_tests}

    # -- running ------------------------------------------------------------------------------
    async def run(self, jobs: list[Job]) -> list[Result]:
        """The results of ``jobs`` in order (``index`` = position); identical jobs run once and
        their copies come back with ``cached=True``. Raises Busy (nothing admitted) when full,
        NeverFits when it never could be. Cancelled (the client went away): programs not yet on
        a worker are dropped and their slots given back."""
        first: dict[tuple, int] = {}
        twin = [first.setdefault(job.key(), i) for i, job in enumerate(jobs)]
        unique = [i for i, t in enumerate(twin) if t == i]
        self._admit(len(unique))
        futures, cancel = [], threading.Event()
        try:
            for i in unique:
                cf = self._pool.submit(self._one, jobs[i], i, cancel)
                cf.add_done_callback(self._release)  # run, failed or cancelled: the slot comes back
                futures.append(asyncio.wrap_future(cf))
        finally:
            for _ in range(len(unique) - len(futures)):  # never submitted (pool shut down)
                self._release()
        try:
            done = dict(zip(unique, await asyncio.gather(*futures)))
        except asyncio.CancelledError:  # (the futures not started are cancelled with the gather)
            cancel.set()  # those running stop within moments, their workers replaced
            raise
        return [done[i] if t == i else dataclasses.replace(done[t], index=i, cached=True)
                for i, t in enumerate(twin)]

    def _one(self, job: Job, index: int, cancel: threading.Event | None = None) -> Result | None:
        ex = self.executor
        try:
            prepared = ex.job_for(job.problem, job.program, job.which, job.early_exit, timeout=job.timeout,
                                  memory_mb=job.memory_mb, max_job_seconds=self.serve.max_job_seconds,
                                  capture=job.capture, real_exit=job.real_exit)
            with self._lock:
                self.running += 1
            try:
                result = ex.run_prepared(job.problem, prepared, job.which, index, cancel)
            finally:
                with self._lock:
                    self.running -= 1
        except Cancelled:  # its client went away: no verdict, and nobody to give one to
            self.metrics.cancelled()
            return None
        except Exception as e:  # noqa: BLE001 - an engine failure is a result, never a lost request
            result = Result(problem_id=str(job.problem.id), index=index, outcome=oc.RUNTIME_ERROR,
                            detail=oc.ENGINE, error_type=type(e).__name__,
                            error_message=oc.truncate(f"{type(e).__name__}: {e}"),
                            tests=job.which, isolation=ex.isolation)
        self.metrics.result(result.outcome, result.detail)
        return result
