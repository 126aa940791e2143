"""Where work runs: the backend seam.

Stages do not construct an execution engine themselves; they ask :func:`make_executor` for one
under their ``execution`` settings, and ``execution.backend`` picks it:

* ``local``: :class:`coderl.execution.pool.Executor`, warm sandboxed workers on this machine;
* ``ray``: :class:`coderl.distributed.ray_executor.RayExecutor`, the same engine whose programs
  run in Ray actors (each owning a local ``Executor``), on this machine or a cluster.

Both have one interface (``run``, ``run_many``, ``parallel``, ``calibrate``, ``job_for``): the
driver builds and hashes every job, consults the verdict cache and writes every record, so the
records, their order rules and resume are the backend's business nowhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_executor"]


def make_executor(config: Any = None):
    """The execution engine ``config.backend`` names (not started: use it as a context manager)."""
    from ..execution.exec_config import ExecConfig

    config = config or ExecConfig()
    if config.backend == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(config)
    from ..execution.pool import Executor

    return Executor(config)
