"""What both Ray backends share: importing Ray with a clear error, starting or joining it, and
placing actor ``i`` on a node."""

from __future__ import annotations

import os
from typing import Any

from ..config import ConfigError


def ray_module(section: str = "execution"):
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{section}.backend: ray needs the ray package (pip install 'coderl[ray]' or "
                          "pip install ray)") from None
    return ray


def ensure_ray(address: str | None, section: str) -> bool:
    """Join the cluster at ``address`` or start a local Ray (unless one is running); True when
    this call started it (the caller shuts it down)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"address": address} if address else {"num_cpus": os.cpu_count() or 1,
                                                                "include_dashboard": False}
    try:
        ray.init(log_to_driver=False, ignore_reinit_error=True, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"{section}.ray_address {address!r}: cannot join the Ray cluster "
                          f"({type(e).__name__}: {e})") from None
    return True


def node_for(i: int):
    """Actor ``i``'s place: node ``i`` mod the cluster's live nodes (round robin, asked again at
    every spawn, so a replacement goes to a node that is up). A hard affinity: Ray's soft one and
    SPREAD both left every actor on the head of a two-node cluster."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray_module().nodes() if n.get("Alive"))
    return NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False) if nodes else "SPREAD"


def node_name() -> str:
    import socket

    return f"{socket.gethostname()}/{ray_module().get_runtime_context().get_node_id()[:8]}"
