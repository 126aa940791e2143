"""A small client of ``coderl serve-executor`` (standard library only; one kept-alive connection
per thread). 429 and 503 answers are retried with backoff, up to ``busy_wait`` seconds in all. A
request is sent again only when a kept-alive connection turns out closed before any byte of the
answer came (never after a timeout: the service may be running it). ``execute`` splits a batch
larger than the service takes at once (``/health``: max_programs, capacity) into several requests.

    client = ExecutorClient("http://127.0.0.1:8000", token=os.environ.get("CODERL_SERVE_TOKEN"))
    results = client.execute(problem, ["def f(x):\\n    return 2 * x\\n"])   # [Result]
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from typing import Any

from coderl.execution.outcome import Result
from coderl.problems.schema import Problem

#: the Problem fields the service takes (the rest stay on the client)
PROBLEM_FIELDS = ("id", "source", "kind", "tests", "example_tests", "entry_point", "prompt", "starter_code")


class ServiceError(RuntimeError):
    """The service refused the request or could not be reached; ``status``: the HTTP status (0: none)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


def problem_fields(problem: Problem) -> dict[str, Any]:
    return {k: getattr(problem, k) for k in PROBLEM_FIELDS}


class ExecutorClient:
    """Thread-safe; picklable (connections are per thread and made again after unpickling)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0, busy_wait: float = 60.0):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"executor url {url!r}: expected http(s)://host:port")
        self.url, self.token, self.timeout, self.busy_wait = url.rstrip("/"), token, timeout, busy_wait
        self._parts = parts
        self._local = threading.local()
        self._batch: int | None = None  # programs per request the service takes (from /health)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # -- endpoints ----------------------------------------------------------------------------
    def execute(self, problem: Problem, programs: list[str], tests: str = "hidden", **limits: Any) -> list[Result]:
        """``POST /v1/execute``: one Result per program, in order (``index`` = position in
        ``programs``). ``limits``: timeout, memory_mb, early_exit. More programs than the service
        takes per request go in several requests, one after the other."""
        programs, size = list(programs), self.batch_limit()
        results: list[Result] = []
        for start in range(0, max(len(programs), 1), size):
            body = {"programs": programs[start:start + size], "problem": problem_fields(problem), "tests": tests,
                    **{k: v for k, v in limits.items() if v is not None}}
            reply = self.request("POST", "/v1/execute", body)
            for r in reply["results"]:
                r = Result.from_dict(r)
                r.index += start
                results.append(r)
        return results

    def batch_limit(self) -> int:
        """Programs per request the service takes: min(max_programs, capacity) from ``/health``
        (read once; a service too old to say: 256)."""
        if self._batch is None:
            health = self.health()
            sizes = [v for v in (health.get("max_programs"), health.get("capacity")) if isinstance(v, int) and v > 0]
            self._batch = min(sizes) if sizes else 256
        return self._batch

    def run_code(self, code: str, stdin: str | None = None, **fields: Any) -> dict[str, Any]:
        """``POST /run_code`` (SandboxFusion's shape); ``fields``: run_timeout, memory_limit_MB, ..."""
        return self.request("POST", "/run_code", {"code": code, "stdin": stdin, "language": "python", **fields})

    def health(self) -> dict[str, Any]:
        """``GET /health`` (not retried: a 503, no worker running, raises ServiceError)."""
        return self.request("GET", "/health", retry=False)

    def metrics(self) -> dict[str, Any]:
        return self.request("GET", "/metrics")

    # -- transport ----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, retry: bool = True) -> dict[str, Any]:
        """One request; 429/503 retried with backoff for up to ``busy_wait`` s (``retry``); other
        errors raise ServiceError."""
        data = None if body is None else json.dumps(body).encode()
        deadline, delay = time.monotonic() + self.busy_wait, 0.05
        while True:
            status, payload = self._send(method, path, data)
            if retry and status in (429, 503) and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if status != 200:
                message = payload.get("message") if isinstance(payload, dict) else None
                raise ServiceError(status, message or str(payload)[:500])
            return payload

    def _send(self, method: str, path: str, data: bytes | None) -> tuple[int, Any]:
        """(status, decoded body). A kept-alive connection the server closed while idle shows as a
        connection error before any byte of the answer: only then is the request sent again, once,
        on a new connection. Never after a timeout or once the answer began: the service may be
        running the request (a second send would run it twice)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        while True:
            conn = self._connection()
            reused = conn.sock is not None  # a kept-alive connection the server may have closed
            answered = False
            try:
                conn.request(method, self._parts.path + path, body=data, headers=headers)
                resp = conn.getresponse()
                answered = True
                raw = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self._drop()
                break
            except (http.client.HTTPException, OSError) as e:
                self._drop()
                stale = reused and not answered and isinstance(e, ConnectionError)  # (TimeoutError is not)
                if not stale:
                    raise ServiceError(0, f"{self.url}: {type(e).__name__}: {e}") from None
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._parts.hostname, self._parts.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
