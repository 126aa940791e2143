"""Running the app under uvicorn: in the foreground (``coderl serve-executor``) or in a background
thread of the calling process (tests, benchmarks, a notebook next to a trainer).

    with BackgroundServer(ServeConfig(port=0), ExecConfig(workers=2)) as srv:
        requests.post(srv.url + "/run_code", json={"code": "print(1)"})

Both check the bind rule first (``serve_config.check_bind``) and bind the socket themselves, so
``port=0`` picks a free port that is known before the first request.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import uvicorn

from coderl.execution.exec_config import ExecConfig
from coderl.serve.app import create_app
from coderl.serve.serve_config import ServeConfig, check_bind, guard_lines, resolve_token

START_TIMEOUT = 120.0  # seconds for the workers to start (bubblewrap, first imports)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket. proto=IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on
    sockets that say they are TCP, and with it on every kept-alive response waits ~40 ms for the
    client's delayed ACK (headers and body are two writes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: Any, log_level: str, serve_cfg: ServeConfig) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30, backlog=2048,
                            limit_concurrency=serve_cfg.max_connections)
    return uvicorn.Server(config)


def startup_lines(engine: Any, serve_cfg: ServeConfig, url: str, token: str | None) -> list[str]:
    """What ``serve`` prints once the workers run: where, how bounded, and the sandbox's guards."""
    ex, file_mb = engine.executor, engine.config.limits.file_size_mb
    lines = [f"coderl executor on {url}  (POST /run_code, POST /v1/execute, GET /health, GET /metrics; "
             f"{engine.workers} workers, max_queue {serve_cfg.max_queue}, max_programs {serve_cfg.max_programs}, "
             f"{'bearer token required' if token else 'no token: loopback only'})",
             *guard_lines(ex.guards, engine.config.isolation, ex.isolation)]
    if serve_cfg.max_body_bytes > file_mb << 20:  # a body could carry a stdin the sandbox cannot write
        lines.append(f"note: a stdin over {file_mb} MB (execution.limits.file_size_mb) is refused with 422, "
                     f"though bodies up to {serve_cfg.max_body_bytes} bytes are read (--max-body-bytes)")
    return lines


def serve(serve_cfg: ServeConfig, execution: ExecConfig, echo: Callable[[str], None] = print) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn's handlers: in-flight requests finish).
    The workers start first: a sandbox without the guards a service needs stops it here
    (ConfigError, see ``serve_config.isolation_problem``) before any port is opened."""
    token = resolve_token(serve_cfg.token)
    check_bind(serve_cfg.host, token)
    app = create_app(serve_cfg, execution, token)
    engine = app.state.engine
    engine.start()
    try:
        sock = bind(serve_cfg.host, serve_cfg.port)
        host, port = sock.getsockname()[:2]
        for line in startup_lines(engine, serve_cfg, f"http://{_host(host)}:{port}", token):
            echo(line)
        _uvicorn(app, "info", serve_cfg).run(sockets=[sock])
    finally:
        engine.close()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class BackgroundServer:
    """The service in a daemon thread of this process, on ``host``:``port`` (0: a free port)."""

    def __init__(self, serve_cfg: ServeConfig | None = None, execution: ExecConfig | None = None,
                 log_level: str = "warning"):
        self.serve_cfg = serve_cfg or ServeConfig(port=0)
        self.token = resolve_token(self.serve_cfg.token)
        check_bind(self.serve_cfg.host, self.token)
        self.app = create_app(self.serve_cfg, execution or ExecConfig(), self.token)
        self._server = _uvicorn(self.app, log_level, self.serve_cfg)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def engine(self):
        return self.app.state.engine

    def start(self) -> "BackgroundServer":
        """Start the workers (here: a sandbox too weak to serve raises ConfigError), then uvicorn."""
        self.engine.start()
        try:
            self._sock = bind(self.serve_cfg.host, self.serve_cfg.port)
        except OSError:
            self.engine.close()
            raise
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{_host(host)}:{port}"
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True, name="coderl-serve-http")
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the executor service did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._sock is not None:
            self._sock.close()
        self.engine.close()  # (the lifespan closed it already, unless uvicorn never started)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
