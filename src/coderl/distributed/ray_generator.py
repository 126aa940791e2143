"""Generation on Ray: model replicas in actors, requests and records on the driver.

:class:`RayGenerator` serves :func:`coderl.generation.core.generate_samples`'s contract —
requests in, ``Sample``s out, ``on_sample`` as each arrives — with ``ray_actors`` actors, each
holding a replica of the model and decoding chunks of the requests with the project's own
batched decoder. Each request draws its noise from its own seed, so a sample is the one the local
backend writes, whichever actor decodes it and in whatever chunk (up to floating-point rounding
between batch shapes, see :mod:`coderl.generation.decode`).

* **Replicas**: an actor loads the model itself (``source``: a model spec, a path every node can
  read); a policy that trains (online RL) is built the same way with its LoRA config
  (``peft_config``), and :meth:`RayGenerator.set_weights` sends its trainable weights to every
  actor before a round.
* **Back-pressure**: requests go in chunks of ``2 x batch_size``, at most two chunks per actor at
  a time (one decoding, one waiting in the actor).
* **Recovery**: an actor that dies is replaced (with the last weights sent) and its chunks are
  sent again; the driver hands on each chunk's samples once, so nothing is lost or duplicated. A
  chunk whose replica dies ``MAX_TRIES`` times is an error naming its first request.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Sequence

from .ray_runtime import ensure_ray, node_for, node_name, ray_module

#: chunks in flight per actor: one decoding, one waiting (no idle round trip)
IN_FLIGHT = 2
#: a chunk whose replica dies this many times is an error (a model no node can load, an OOM)
MAX_TRIES = 3


class _GenActor:
    """One replica: the model of ``source`` (its LoRA config applied when given), in eval mode."""

    def __init__(self, source: str, peft_config: Any, device: str, dtype: str, threads: int | None):
        import torch

        from ..models import load_model

        if threads:
            torch.set_num_threads(threads)
        self.lm = load_model(source, device=device, dtype=dtype, threads=threads)
        if peft_config is not None:
            import dataclasses

            from peft import get_peft_model

            self.lm = dataclasses.replace(self.lm, model=get_peft_model(self.lm.model, peft_config))
        self.lm.model.eval()

    def hello(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": node_name()}

    def set_weights(self, state: dict) -> int:
        """Load ``state`` (parameter name -> tensor, a subset of the model's); returns its size."""
        import torch

        with torch.no_grad():
            missing, unexpected = self.lm.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"weights the replica does not have: {unexpected[:3]}")
        return len(state)

    def generate(self, requests: list, cfg: Any) -> list:
        import torch

        from ..generation.core import generate_samples

        with torch.no_grad():
            return generate_samples(self.lm, requests, cfg)


class RayGenerator:
    """See the module docstring. ``section`` names the settings in errors (``generation`` /
    ``execution``). Use as a context manager."""

    def __init__(self, source: str, *, actors: int = 2, address: str | None = None, device: str = "cpu",
                 dtype: str = "float32", threads: int | None = None, peft_config: Any = None,
                 section: str = "generation"):
        self._ray = ray_module(section)
        self.source, self.peft_config, self.section = source, peft_config, section
        self.n, self.address, self.device, self.dtype = actors, address, device, dtype
        self.threads = threads or max(1, (os.cpu_count() or 1) // actors)
        self.actors: list[Any] = []
        self.nodes: list[str] = []
        self.restarts = 0
        self._weights = None  # the last weights sent (a replacement gets them too)
        self._started_ray = False

    def __enter__(self) -> "RayGenerator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self.actors:
            return
        self._started_ray = ensure_ray(self.address, self.section)
        self._remote = self._ray.remote(_GenActor)
        self.actors = [self._spawn(i) for i in range(self.n)]
        self.nodes = [h["node"] for h in self._ray.get([a.hello.remote() for a in self.actors])]

    def _spawn(self, i: int):
        gpus = 1 if self.device.startswith("cuda") else 0
        actor = self._remote.options(num_cpus=0, num_gpus=gpus, scheduling_strategy=node_for(i)).remote(
            self.source, self.peft_config, "cuda" if gpus else self.device, self.dtype, self.threads)
        if self._weights is not None:
            actor.set_weights.remote(self._weights)  # ordered before any later call to this actor
        return actor

    def backend_info(self) -> dict[str, Any]:
        return {"backend": "ray", "actors": len(self.actors), "nodes": sorted(set(self.nodes)),
                "actor_restarts": self.restarts}

    def set_weights(self, state: dict) -> None:
        """Send the policy's trainable weights (name -> tensor, on any device) to every replica
        (one that died since the last round is replaced: the new one starts with them)."""
        from ray.exceptions import RayActorError

        self._weights = self._ray.put({k: v.detach().cpu() for k, v in state.items()})
        for i, (actor, ref) in enumerate([(a, a.set_weights.remote(self._weights)) for a in self.actors]):
            try:
                self._ray.get(ref)
            except RayActorError:
                self.actors[i] = self._spawn(i)
                self.restarts += 1

    def generate(self, requests: Sequence, cfg: Any, *, on_sample: Callable | None = None) -> list:
        """The samples of ``requests`` in request order; ``on_sample(sample)`` as each chunk comes
        back (chunk by chunk, in request order within one)."""
        from ray.exceptions import RayActorError, RayTaskError

        ray = self._ray
        size = 2 * cfg.batch_size
        chunks = [list(range(a, min(a + size, len(requests)))) for a in range(0, len(requests), size)]
        todo, out = deque(range(len(chunks))), [None] * len(requests)
        failures = [0] * len(chunks)
        pending: dict[Any, tuple[int, int, Any]] = {}  # ref -> (chunk, actor slot, actor)
        load = [0] * len(self.actors)
        while todo or pending:
            for i in range(len(self.actors)):
                while todo and load[i] < IN_FLIGHT:
                    c = todo.popleft()
                    actor = self.actors[i]
                    pending[actor.generate.remote([requests[k] for k in chunks[c]], cfg)] = (c, i, actor)
                    load[i] += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            c, i, actor = pending.pop(ready[0])
            load[i] -= 1
            try:
                samples = ray.get(ready[0])
            except RayActorError as e:  # the actor died: a new one, and its chunks are sent again
                failures[c] += 1
                if failures[c] >= MAX_TRIES:
                    first = requests[chunks[c][0]]
                    raise RuntimeError(f"{self.section}.backend ray: the replica decoding the requests from "
                                       f"{first.problem.id!r} (index {first.index}) died {MAX_TRIES} times "
                                       f"(last: {str(e).splitlines()[0][:300]})") from None
                if self.actors[i] is actor:
                    self.actors[i] = self._spawn(i)
                    self.restarts += 1
                todo.appendleft(c)
                continue
            except RayTaskError as e:  # the request's own error (e.g. a prompt too long), as raised
                raise e.as_instanceof_cause() from None
            for k, s in zip(chunks[c], samples):
                out[k] = s
                if on_sample is not None:
                    on_sample(s)
        return out

    def close(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - gone already
                pass
        self.actors = []
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False
