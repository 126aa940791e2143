"""Where coderl finds its bundled data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The project's ``data/`` (override with ``CODERL_DATA``)."""
    env = os.environ.get("CODERL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    """Converted checkpoints, result caches (override with ``CODERL_CACHE``)."""
    return Path(os.environ.get("CODERL_CACHE") or Path.home() / ".cache" / "coderl")
