"""Where a training run's batches come from: a :class:`BatchSource` plans every optimizer step (its
kind and its micro-batches); :class:`FixedBatches` is the source of data that exists before
training starts (SFT's gold programs, offline RL's samples, the critic's labelled programs).

Data order in :class:`FixedBatches` is a pure function of the seed and the step, so a resumed run
reads exactly the batches an uninterrupted one would: stream ``i``'s micro-batch ``k`` is a slice
of a permutation seeded by ``(seed + 7919 i, k // batches_per_epoch)``; the ``j``-th step of a
kind reads micro-batches ``j*G .. j*G+G-1`` (``G`` = grad_accum x processes), across an epoch's
end if need be. A stream given ``groups`` (lists of its item numbers) permutes whole groups and
keeps each group's items together (offline RL's samples of one problem, whose prompt then runs
once: :mod:`coderl.training.shared_prefix`). With ``cross_epochs=False`` (the critic's) steps stay
within an epoch, its last step taking the micro-batches left (several processes: choose a ``G`` that divides them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch


@dataclass
class Step:
    """One optimizer step's plan: its kind and micro-batches (process ``p`` of ``n``: ``p, p + n, ...``)."""

    kind: str
    micro_batches: list[list[Any]]


class BatchSource(Protocol):
    """What the Trainer asks of its data: ``bind(group)`` (micro-batches per step, all processes);
    ``len()``, the optimizer steps; ``step(s)``, step ``s``'s plan, asked once, after step ``s - 1``;
    ``ends_epoch(s)``; ``state_dict()`` / ``load_state_dict(d)``, what a resumed run needs."""

    def bind(self, group: int) -> None: ...

    def __len__(self) -> int: ...

    def step(self, s: int) -> Step: ...

    def ends_epoch(self, s: int) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MicroBatches:
    """Micro-batch ``k`` of a stream of ``n`` examples: epochs of seeded permutations."""

    def __init__(self, n: int, batch_size: int, seed: int, groups: Sequence[Sequence[int]] | None):
        self.n, self.batch_size, self.seed, self.groups = n, batch_size, seed, groups
        self.per_epoch = max(1, math.ceil(n / batch_size))
        self._epoch, self._perm = -1, []

    def __call__(self, k: int) -> list[int]:
        epoch, pos = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.groups) if self.groups else self.n, generator=g).tolist()
            self._epoch, self._perm = epoch, [i for g in perm for i in self.groups[g]] if self.groups else perm
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]


class FixedBatches:
    """A :class:`BatchSource` over lists: ``streams`` per kind of step, the first (primary) deciding
    the run's length; ``kinds(n)``: the kinds of a run with ``n`` primary steps; ``groups``: a
    stream's groups of items kept together (see the module docstring)."""

    def __init__(self, streams: dict[str, Sequence[Any]], *, epochs: int, batch_size: int, seed: int,
                 kinds: Callable[[int], list[str]] | None = None, cross_epochs: bool = True,
                 groups: dict[str, Sequence[Sequence[int]]] | None = None):
        self.streams = streams
        self.primary = next(iter(streams))
        self.epochs, self.cross_epochs = epochs, cross_epochs
        self.kinds_of = kinds or (lambda n: [self.primary] * n)
        self.micro = {k: MicroBatches(len(items), batch_size, seed + 7919 * i, (groups or {}).get(k))
                      for i, (k, items) in enumerate(streams.items())}
        self.per_epoch = self.micro[self.primary].per_epoch
        self.group = 0
        self.steps_per_epoch = 0         # cross_epochs=False: the primary stream's steps per epoch
        self.kinds: list[str] = []
        self.nth: list[int] = []         # step s is the nth[s]-th step of its kind
        self.epoch_ends: set[int] = set()

    def bind(self, group: int) -> None:
        self.group = group
        self.steps_per_epoch = -(-self.per_epoch // group)
        n = -(-(self.epochs * self.per_epoch) // group) if self.cross_epochs else self.epochs * self.steps_per_epoch
        self.kinds, self.nth, self.epoch_ends = self.kinds_of(n), [], set()
        seen = {}
        for s, kind in enumerate(self.kinds):
            j = seen.get(kind, 0)
            self.nth.append(j)
            seen[kind] = j + 1
            span = self._span(kind, j)
            if kind == self.primary and (span[-1] + 1) // self.per_epoch > span[0] // self.per_epoch:
                self.epoch_ends.add(s)          # the step reads an epoch's last micro-batch

    def _span(self, kind: str, j: int) -> range:
        """The micro-batch numbers of the ``j``-th step of ``kind``."""
        G = self.group
        if self.cross_epochs or kind != self.primary:
            return range(j * G, (j + 1) * G)
        epoch, r = divmod(j, self.steps_per_epoch)
        start = epoch * self.per_epoch + r * G
        return range(start, min(start + G, (epoch + 1) * self.per_epoch))

    def __len__(self) -> int:
        return len(self.kinds)

    def step(self, s: int) -> Step:
        kind = self.kinds[s]
        items = self.streams[kind]
        return Step(kind, [[items[i] for i in self.micro[kind](k)] for k in self._span(kind, self.nth[s])])

    def ends_epoch(self, s: int) -> bool:
        return s in self.epoch_ends

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
