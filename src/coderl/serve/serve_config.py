"""``coderl serve-executor``'s own settings (the executor's come from ``ExecConfig``), and the bind rule.

The service binds 127.0.0.1 by default. :func:`check_bind` refuses any address that is not a
loopback one unless a bearer token is set: programs run in the sandbox either way, but an open
port on a network would let anyone spend this machine's CPUs.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from coderl.config import ConfigError, opt, validate

TOKEN_ENV = "CODERL_SERVE_TOKEN"


@dataclass
class ServeConfig:
    """The HTTP service: address, authentication, admission and request limits."""

    host: str = opt("127.0.0.1", "Address to bind. Anything but a loopback address needs a token.")
    port: int = opt(8000, "TCP port (0: any free port, printed at start).", ge=0, le=65535)
    token: str | None = opt(None, f"Bearer token every request but GET /health must carry "
                            f"(default: ${TOKEN_ENV}; a token on the command line shows in `ps`).")
    max_queue: int = opt(1024, "Programs admitted beyond those running (one per execution worker); "
                         "a request that would go past it is answered 429 busy, nothing queued.", ge=0)
    max_body_bytes: int = opt(8 << 20, "Largest request body, in bytes (413 past it).", ge=1024)
    max_programs: int = opt(512, "Programs per POST /v1/execute request (422 past it). At most what the "
                            "service admits at once (workers + max_queue): the service refuses to start "
                            "otherwise.", ge=1)
    max_tests: int = opt(1000, "Tests per problem in a request (422 past it).", ge=1)
    max_job_seconds: float = opt(300.0, "Seconds one program may run, all its tests together, whatever the "
                                 "request's time limit and test count (a per-test limit x tests past it "
                                 "ends in a timeout).", gt=0)
    max_connections: int = opt(512, "Concurrent connections (and requests) the server takes; past it new "
                               "requests are answered 503 (uvicorn's limit_concurrency).", ge=1)

    def __post_init__(self) -> None:
        validate(self, "serve")


def resolve_token(token: str | None) -> str | None:
    """The token given, else ``$CODERL_SERVE_TOKEN``; an empty string is no token."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    return token or None


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token (ConfigError naming the option)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"serve.host: refusing to bind {host!r} (not a loopback address) without a "
                          f"bearer token: pass --token or set ${TOKEN_ENV}, or bind 127.0.0.1")


#: the guards a served sandbox needs: programs must not reach the network (the service's own port
#: included), nor signal or trace the service (a dropped uid, or a pid namespace)
NEEDED_GUARDS = "net_namespace and (uid_drop or pid_namespace)"


def isolation_problem(guards: dict[str, bool], isolation: str) -> str | None:
    """Why the engine's guards are too weak to serve (None: they suffice, or the operator chose
    ``--isolation none`` explicitly)."""
    if isolation == "none" or (guards.get("net_namespace") and (guards.get("uid_drop") or guards.get("pid_namespace"))):
        return None
    active = ", ".join(k for k, v in guards.items() if v) or "none"
    return (f"execution.isolation: refusing to serve: the sandbox needs {NEEDED_GUARDS}; active guards: "
            f"{active}. Without them a program can open connections (to this service's port and anything "
            f"this machine reaches) or signal the service. Install bubblewrap (bwrap) and check that it can "
            f"create namespaces here, or pass --isolation none to serve WITHOUT that isolation (trusted "
            f"code only)")


def guard_lines(guards: dict[str, bool], isolation: str, label: str) -> list[str]:
    """What the startup prints about the sandbox: its guards, and a loud warning under ``none``."""
    on = [k for k, v in guards.items() if v]
    off = [k for k, v in guards.items() if not v]
    lines = [f"sandbox: {label}; guards active: {', '.join(on) or 'none'}"
             + (f"; not active: {', '.join(off)}" if off else "")]
    if isolation == "none":
        lines.append("WARNING: --isolation none: programs run WITHOUT namespaces. They can connect to the "
                     "network (this service's port, the host's other services, the internet), read every "
                     "file the uid they run as can read, and see the host's processes; only rlimits"
                     + (", a dropped uid" if guards.get("uid_drop") else "")
                     + " and a scrubbed environment hold them. Serve trusted code only.")
    return lines
