"""The bridge between HTTP requests and the sandboxed ``Executor``: admission, limits, threads.

A request's programs are *admitted* all at once or not at all: at most ``workers + max_queue``
programs are admitted at any time (running or waiting for a worker); past that the request is
refused with :class:`Busy` (HTTP 429) and nothing of it is queued. Admitted programs run on a
thread pool with one thread per execution worker, so ``in_flight`` never exceeds the workers
and ``queue_depth`` is what waits. A program's slot is given back when it finishes, or when it is
cancelled before it started (its client went away).

Per-request limits are capped by the server's (``effective_limits``). Every program goes through
``Executor`` — the same job, sandbox and verdicts as ``coderl execute`` — with the per-test limit
passed to ``job_for`` and a lower memory limit written into the job (its hash then says so).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from coderl.config import ConfigError
from coderl.execution import codes as oc
from coderl.execution.exec_config import ExecConfig
from coderl.execution.outcome import Result
from coderl.execution.pool import Executor
from coderl.problems.schema import Problem
from coderl.serve.metrics import Metrics

MIN_MEMORY_MB = 256  # ExecConfig's own floor: the interpreter alone maps ~100 MB


class Busy(Exception):
    """The admission bound is reached: the request was refused whole (HTTP 429)."""


@dataclass
class Job:
    """One program on one problem's test set, under limits already capped by the server's."""

    problem: Problem
    program: str
    which: str = "hidden"
    timeout: float | None = None
    memory_mb: int | None = None
    early_exit: bool | None = None

    def key(self) -> tuple:
        """Jobs with equal keys give the same verdict (the same problem object, program, limits)."""
        return id(self.problem), self.program, self.which, self.timeout, self.memory_mb, self.early_exit


class Engine:
    """An ``Executor`` behind a bounded admission counter and a thread pool (one thread per worker)."""

    def __init__(self, config: ExecConfig, max_queue: int):
        if config.time_limit != "fixed":
            raise ConfigError("execution.time_limit: the service runs fixed per-test limits (a served "
                              "problem carries no gold program to calibrate on); use time_limit=fixed")
        self.config, self.max_queue = config, max_queue
        self.executor = Executor(config)
        self.workers = len(self.executor._workers)  # (min(config.workers or 2 x cores, 64))
        self.capacity = self.workers + max_queue
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self.admitted = 0  # programs running or waiting for a worker
        self.running = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.executor.start()
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

    def _admit(self, n: int) -> None:
        with self._lock:
            if self.admitted + n > self.capacity:
                raise Busy(f"busy: {self.admitted} programs admitted, room for {self.capacity} "
                           f"({self.workers} workers + max_queue {self.max_queue}); {n} more refused, retry later")
            self.admitted += n

    def _release(self, _future: Any = None) -> None:
        with self._lock:
            self.admitted -= 1

    def state(self) -> dict[str, Any]:
        with self._lock:
            admitted, running = self.admitted, self.running
        return {"queue_depth": admitted - running, "in_flight": running, "admitted": admitted,
                "capacity": self.capacity, "workers": self.workers, "max_queue": self.max_queue,
                "isolation": self.executor.isolation, "guards": dict(self.executor.guards)}

    # -- running ------------------------------------------------------------------------------
    async def run(self, jobs: list[Job]) -> list[Result]:
        """The results of ``jobs`` in order (``index`` = position); identical jobs run once and
        their copies come back with ``cached=True``. Raises Busy (nothing admitted) when full."""
        first: dict[tuple, int] = {}
        twin = [first.setdefault(job.key(), i) for i, job in enumerate(jobs)]
        unique = [i for i, t in enumerate(twin) if t == i]
        self._admit(len(unique))
        futures = []
        try:
            for i in unique:
                cf = self._pool.submit(self._one, jobs[i], i)
                cf.add_done_callback(self._release)  # run, failed or cancelled: the slot comes back
                futures.append(asyncio.wrap_future(cf))
        finally:
            for _ in range(len(unique) - len(futures)):  # never submitted (pool shut down)
                self._release()
        done = dict(zip(unique, await asyncio.gather(*futures)))
        return [done[i] if t == i else dataclasses.replace(done[t], index=i, cached=True)
                for i, t in enumerate(twin)]

    def _one(self, job: Job, index: int) -> Result:
        ex = self.executor
        try:
            prepared = self._with_memory(ex.job_for(job.problem, job.program, job.which, job.early_exit,
                                                    timeout=job.timeout), job.memory_mb)
            with self._lock:
                self.running += 1
            try:
                result = ex._run(job.problem, job.which, index, prepared)
            finally:
                with self._lock:
                    self.running -= 1
        except Exception as e:  # noqa: BLE001 - an engine failure is a result, never a lost request
            result = Result(problem_id=str(job.problem.id), index=index, outcome=oc.RUNTIME_ERROR,
                            detail=oc.ENGINE, error_type=type(e).__name__, error_message=oc.truncate(str(e)),
                            tests=job.which, isolation=ex.isolation)
        self.metrics.result(result.outcome, result.detail)
        return result

    def _with_memory(self, prepared: tuple[dict, dict, str, int], memory_mb: int | None) -> tuple:
        """The prepared job under a lower memory limit (the hash of the job then says so)."""
        job, frame, key, n = prepared
        if memory_mb is None or memory_mb == job["limits"]["memory_mb"]:
            return prepared
        job = {**job, "limits": {**job["limits"], "memory_mb": memory_mb}}
        key = hashlib.sha256(f"{key}|memory_mb={memory_mb}".encode()).hexdigest()
        return job, frame, key, n
