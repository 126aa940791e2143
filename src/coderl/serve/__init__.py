"""coderl.serve: the sandboxed executor as an HTTP service (``coderl serve-executor``).

For trainers that run elsewhere (TRL, veRL, anything that speaks SandboxFusion's ``/run_code``):
``app.py`` the endpoints, ``engine.py`` admission and limits around the ``Executor``,
``runcode.py`` SandboxFusion's shape, ``gate.py`` token and body size, ``server.py`` uvicorn,
``client.py`` a client, ``serve_config.py`` the settings and the bind rule.

Names are imported lazily (the web stack loads only when used).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ServeConfig": "serve_config", "check_bind": "serve_config", "create_app": "app", "Engine": "engine",
    "BackgroundServer": "server", "serve": "server", "ExecutorClient": "client", "ServiceError": "client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"coderl.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'coderl.serve' has no attribute {name!r}")
