"""The door every request passes before the app sees it (pure ASGI middleware): the bearer token,
then the body size. A refused request is answered at once — 401 without a valid token, 413 for a
body over the limit (by its Content-Length, or counted as it streams in), or for any body at all
on the open paths (``GET /health``: no token, so nothing of its body is ever read) — and reaches
nothing: no body is parsed, no program admitted.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable

OPEN_PATHS = ("/health",)  # liveness probes need no token (they learn nothing but "ok"), and send no body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    words = {400: "bad request", 401: "unauthorized", 404: "not found", 405: "method not allowed",
             413: "request too large", 422: "invalid request", 429: "busy", 500: "internal error"}
    body = {"error": words.get(status, "error"), "message": message}
    if field is not None:
        body["field"] = field
    return body


class Gate:
    """ASGI middleware: token check (all paths but OPEN_PATHS), then the body size limit."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int, on_reject: Callable[[int], None]):
        self.app, self.token, self.max_body = app, token, max_body_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            self.on_reject(401)
            return await send_json(send, 401, error_body(401, "missing or wrong bearer token "
                                                          "(header Authorization: Bearer <token>)"),
                                   [(b"www-authenticate", b"Bearer")])
        declared = self._content_length(scope)
        if scope["path"] in OPEN_PATHS and (declared or self._header(scope, b"transfer-encoding") is not None):
            return await self._too_large(send, f"{scope['path']} takes no request body")  # (never read)
        if declared is not None and declared > self.max_body:
            return await self._too_large(send)
        body = await self._read(receive)
        if body is None:
            return await self._too_large(send)
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                          self.token.encode())
        return False

    @staticmethod
    def _header(scope: Scope, wanted: bytes) -> bytes | None:
        return next((value for name, value in scope["headers"] if name == wanted), None)

    def _content_length(self, scope: Scope) -> int | None:
        value = self._header(scope, b"content-length")
        try:
            return None if value is None else int(value)
        except ValueError:
            return None

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, why: str | None = None) -> None:
        self.on_reject(413)
        why = why or f"request body over the server's limit of {self.max_body} bytes (--max-body-bytes)"
        await send_json(send, 413, error_body(413, why), [(b"connection", b"close")])


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then defers to the real one
    (so that a disconnect is still seen)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
