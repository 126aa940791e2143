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
    max_programs: int = opt(512, "Programs per POST /v1/execute request (422 past it).", ge=1)
    long_stdout: str = opt("error", "POST /run_code when a program printed more than the executor keeps "
                           "(2000 characters: head and tail): error (status SandboxError, a wrong "
                           "answer never passes unnoticed) or truncate (the head and tail, as coderl "
                           "keeps them).", choices=("error", "truncate"))

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
