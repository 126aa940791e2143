"""The execution engine on Ray: programs run in actors, everything else stays on the driver.

:class:`RayExecutor` is an :class:`~coderl.execution.pool.Executor` whose one raw step — hand a
built job to a sandbox worker and read its reply (``_dispatch``) — goes to one of
``execution.ray_actors`` Ray actors, each owning a local ``Executor`` with its own warm workers
(sandbox, rlimits and all, on the actor's node). The driver keeps what decides a record: building
and hashing jobs, time limits, the verdict cache, assembling ``Result``s and (in the stages)
writing them, so records come out as the local backend writes them.

* **Back-pressure**: at most ``2 x ray_actors x workers`` jobs are in flight (one driver thread
  each): every worker busy and one job more waiting in its actor, so a worker never idles for a
  round trip; nothing is queued beyond that.
* **Recovery**: an actor that dies (node lost, killed) is replaced and the job it held is sent
  again (a program's verdict does not depend on where or how often it ran; the driver writes each
  record once), so nothing is lost or duplicated. A job the actor does not answer within its own
  time budget plus a margin counts as a dead actor.
* **Cluster**: ``ray_address`` joins a running cluster (``ray start --head`` / ``ray start
  --address``); actor ``i`` goes to node ``i`` mod the live nodes (a replacement too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from typing import Any

from ..execution.pool import Aborted, Cancelled, Executor, _engine_failure
from .ray_runtime import ensure_ray, node_for, node_name, ray_module

#: jobs in flight per worker: one running, one waiting in its actor (no idle round trip)
IN_FLIGHT = 2
#: seconds beyond a job's own budget before an actor that has not answered is given up on
REPLY_MARGIN = 30.0


class _ExecActor:
    """One actor: a local Executor whose workers run the driver's jobs (several at once)."""

    def __init__(self, config: dict[str, Any]):
        from ..execution.exec_config import ExecConfig

        cfg = ExecConfig.from_dict({**config, "backend": "local", "cache_path": None})
        self.ex = Executor(cfg)
        self.ex.start()

    def hello(self) -> dict[str, Any]:
        return {"isolation": self.ex.isolation, "guards": self.ex.guards, "workers": self.ex.worker_count,
                "pid": os.getpid(), "node": node_name()}

    def dispatch(self, job: dict, frame: dict) -> dict[str, Any]:
        return self.ex._dispatch(job, frame)

    def close(self) -> None:
        self.ex.close()


class RayExecutor(Executor):
    """See the module docstring. Use as a context manager, as the local ``Executor``."""

    def __init__(self, config: Any):
        self._ray = ray_module()
        super().__init__(config)
        self._workers = []  # no local workers: programs run in the actors'
        self.actors: list[Any] = []
        self.nodes: list[str] = []
        self._per_actor = 1
        self._next = 0
        self._lock = threading.Lock()
        self._started_ray = False

    @property
    def worker_count(self) -> int:
        """Jobs in flight at most (``parallel`` runs one driver thread each): two per worker."""
        return IN_FLIGHT * (len(self.actors) * self._per_actor if self.actors else self.config.ray_actors)

    def start(self) -> None:
        if self.started:
            return
        ray = self._ray
        self._started_ray = ensure_ray(self.config.ray_address, "execution")
        self._remote = ray.remote(_ExecActor)
        self.actors = [self._spawn(i) for i in range(self.config.ray_actors)]
        hellos = ray.get([a.hello.remote() for a in self.actors])
        self._per_actor = min(h["workers"] for h in hellos)
        self.nodes = [h["node"] for h in hellos]
        self.isolation, self.guards = hellos[0]["isolation"], hellos[0]["guards"]
        self.started = True

    def backend_info(self) -> dict[str, Any]:
        return {"backend": "ray", "actors": len(self.actors), "workers_per_actor": self._per_actor,
                "nodes": sorted(set(self.nodes)), "actor_restarts": self.restarts}

    def _spawn(self, i: int):
        """Actor ``i``, on node ``i`` mod the live nodes (:func:`.ray_runtime.node_for`)."""
        cfg = dataclasses.asdict(self.config)
        workers = self.config.workers or 2 * (os.cpu_count() or 1)
        return self._remote.options(num_cpus=0, max_concurrency=IN_FLIGHT * workers + 2,
                                    scheduling_strategy=node_for(i)).remote(cfg)

    def _pick(self) -> tuple[int, Any]:
        with self._lock:
            i = self._next % len(self.actors)
            self._next += 1
            return i, self.actors[i]

    def _replace_actor(self, i: int, dead: Any) -> None:
        with self._lock:
            if self.actors[i] is not dead:  # another thread replaced it already
                return
            try:
                self._ray.kill(dead)
            except Exception:  # noqa: BLE001 - it is gone either way
                pass
            self.actors[i] = self._spawn(i)
            self.restarts += 1

    def _dispatch(self, job: dict, frame: dict, cancel: threading.Event | None = None) -> dict[str, Any]:
        ray = self._ray
        errors: list[str] = []
        for _ in range(3):
            if self.aborted:
                raise Aborted("the execution engine was aborted")
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled by the caller before it ran")
            i, actor = self._pick()
            ref = actor.dispatch.remote(job, frame)
            deadline = time.monotonic() + float(job.get("job_timeout") or 60) + REPLY_MARGIN
            try:
                while True:
                    ready, _ = ray.wait([ref], timeout=0.2)
                    if ready:
                        return ray.get(ref)
                    if self.aborted:
                        ray.cancel(ref, force=True)
                        raise Aborted("the execution engine was aborted")
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled by the caller")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"actor {i} did not answer within the job's budget")
            except (Aborted, Cancelled):
                raise
            except Exception as e:  # noqa: BLE001 - the actor died (or hangs): replace it, send again
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                self._replace_actor(i, actor)
        return _engine_failure("ray actors failed three times: " + "; ".join(errors))

    def abort(self) -> None:
        self.aborted = True
        self._kill_actors()

    def _kill_actors(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # gone already: nothing to kill
                self._ray.kill(a)

    def close(self) -> None:
        ray = self._ray
        if self.actors and not self.aborted:
            try:
                ray.get([a.close.remote() for a in self.actors], timeout=10)
            except Exception:  # noqa: BLE001 - closing: a dead actor has nothing to close
                pass
        self._kill_actors()
        self.actors = []
        self.started = False
        self._close_stores()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
