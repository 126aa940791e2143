"""The service's counters, read by ``GET /metrics``: admission, verdicts, throughput, rejections."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from coderl.execution.codes import OUTCOMES

WINDOW = 60.0  # seconds over which programs_per_s is measured


class Metrics:
    """Thread-safe counters (verdicts are counted on the executor's threads, requests on the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.programs = 0
        self.outcomes: collections.Counter[str] = collections.Counter({o: 0 for o in OUTCOMES})
        self.details: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        self._finished: collections.deque[float] = collections.deque()
        self.programs_cancelled = 0  # dropped before they ran: their client went away
        self.disconnects = 0  # requests whose client went away before the answer

    def result(self, outcome: str, detail: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.programs += 1
            self.outcomes[outcome] += 1
            if detail:
                self.details[detail] += 1
            self._finished.append(now)
            self._trim(now)

    def request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def reject(self, status: int) -> None:
        with self._lock:
            self.rejected[str(status)] += 1

    def cancelled(self) -> None:
        with self._lock:
            self.programs_cancelled += 1

    def disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0] < now - WINDOW:
            self._finished.popleft()

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            uptime = now - self.started
            window = min(WINDOW, uptime) or 1e-9
            return {"uptime_s": round(uptime, 3), "programs": self.programs,
                    "programs_per_s": round(len(self._finished) / window, 3),
                    "programs_per_s_window_s": round(window, 3),
                    "outcomes": dict(self.outcomes), "details": dict(self.details),
                    "requests": dict(self.requests), "rejected": dict(self.rejected),
                    "programs_cancelled": self.programs_cancelled, "disconnects": self.disconnects}
