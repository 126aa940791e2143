"""Run (problem, program) pairs here or on a ``coderl serve-executor``, with one call:
``scorer.run(items, tests) -> [Result | None]`` (None: the engine or the service failed for that
program, so it has no verdict). Used by ``coderl.rewards`` (TRL and veRL).

Both scorers are picklable: the in-process executor and the connections are made again, lazily,
wherever the object is unpickled (a trainer's worker process).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any

from coderl.execution import codes as oc
from coderl.execution.exec_config import ExecConfig
from coderl.execution.outcome import Result
from coderl.problems.schema import Problem
from coderl.serve.client import ExecutorClient, ServiceError

log = logging.getLogger(__name__)

Item = tuple[Problem, str]
#: refusals that no retry mends (a wrong token, URL or request): raised, never turned into None
FATAL = (400, 401, 403, 404, 405, 422)


def _verdict(r: Result) -> Result | None:
    return None if r.detail == oc.ENGINE else r


class LocalScorer:
    """An in-process ``Executor`` (warm sandboxed workers), started on first use."""

    def __init__(self, config: ExecConfig | None = None):
        self.config = config or ExecConfig()
        self._executor = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def _engine(self):
        with self._lock:
            if self._executor is None:
                from coderl.execution.pool import Executor

                ex = Executor(self.config)
                ex.start()
                self._executor = ex
            return self._executor

    def run(self, items: list[Item], tests: str = "hidden") -> list[Result | None]:
        if not items:
            return []
        results = self._engine().run_many([(p, prog, tests) for p, prog in items])
        return [_verdict(r) for r in results]

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None


class RemoteScorer:
    """A ``coderl serve-executor`` at ``url``: one ``POST /v1/execute`` per problem object (chunks
    of at most ``chunk`` programs, and never more than the service takes at once: its /health
    says), ``threads`` requests at a time. A service that stays busy (429 past ``busy_wait`` s),
    fails or cannot be reached leaves those programs unscored (None, logged); a refusal in
    ``FATAL`` (401: the token) raises ServiceError."""

    def __init__(self, url: str, token: str | None = None, threads: int = 8, chunk: int = 256,
                 busy_wait: float = 300.0):
        self.client = ExecutorClient(url, token=token, busy_wait=busy_wait)
        self.threads, self.chunk = threads, chunk

    def run(self, items: list[Item], tests: str = "hidden") -> list[Result | None]:
        groups: dict[int, list[int]] = {}  # by object: two problems may share an id, not their tests
        for i, (problem, _) in enumerate(items):
            groups.setdefault(id(problem), []).append(i)
        out: list[Result | None] = [None] * len(items)
        try:
            chunk = min(self.chunk, self.client.batch_limit())
        except ServiceError as e:
            if e.status in FATAL:
                raise
            log.warning("coderl executor %s: %s programs left unscored: %s", self.client.url, len(items), e)
            return out
        calls = [idx[k:k + chunk] for idx in groups.values() for k in range(0, len(idx), chunk)]

        def one(idx: list[int]) -> None:
            problem = items[idx[0]][0]
            try:
                results = self.client.execute(problem, [items[i][1] for i in idx], tests)
            except ServiceError as e:
                if e.status in FATAL:  # a wrong token or URL, a request the service cannot read
                    raise
                log.warning("coderl executor %s: %s programs of %s left unscored: %s",
                            self.client.url, len(idx), problem.id, e)
                return
            for i, r in zip(idx, results):
                out[i] = _verdict(r)

        if len(calls) == 1:
            one(calls[0])
        elif calls:
            with concurrent.futures.ThreadPoolExecutor(min(self.threads, len(calls))) as pool:
                list(pool.map(one, calls))
        return out

    def close(self) -> None:
        pass


def make_scorer(url: str | None = None, token: str | None = None,
                exec_config: ExecConfig | None = None) -> LocalScorer | RemoteScorer:
    """A RemoteScorer for ``url`` (``token``: its bearer token), else a LocalScorer."""
    if url:
        return RemoteScorer(url, token)
    return LocalScorer(exec_config)
