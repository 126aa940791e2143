"""What a training stage supplies to the :class:`~coderl.training.engine.Trainer`: a
:class:`TrainingTask`, in the manner of a TRL trainer's overridable methods (ARCHITECTURE.md,
"Training"; the actor's is ``ActorTask``, the critic's ``CriticTask``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Point:
    """Where a validation happens."""

    step: int                  # optimizer steps done
    index: int                 # validations before this one
    at_end: bool               # the run's last step (the data's end, or the max_steps budget)
    epoch: int                 # the epoch the step is in (1-based; at an epoch's end: that epoch)
    train_loss: float          # mean training loss of that epoch's micro-batches so far (0: none)


@dataclass
class Validation:
    """What a task's validation returns."""

    entry: dict[str, Any]            # the history entry (logged as an ``eval`` event)
    score: list[float] | None        # higher is better, compared as lists; None: not a candidate
    best: dict[str, Any]             # the run's ``best`` record when this validation is the best
    keep: Any = None                 # what the task keeps of the best validation (resumable)
    scalars: dict[str, float] = field(default_factory=dict)   # TensorBoard tag -> value
    shown: str = ""                  # the line echoed


@dataclass
class RunResult:
    """What the Trainer hands the task's ``summary`` at the end."""

    complete: bool                   # the data's end, the max_steps budget, or an early stop
    state: Any                       # the TrainState
    total_steps: int
    max_steps: int | None
    trainable_parameters: int
    train_seconds: float
    wall_seconds: float
    checkpoint: Path | None          # the newest checkpoint
    main: bool                       # this is the main process (the one that writes)


class TrainingTask:
    """The stage's side of a training run: ``name`` (messages, logs), ``published`` (the selected
    model's place), ``info`` (the ``start`` event), ``stale_outputs`` (removed on a fresh start)."""

    name: str
    published: Path
    info: dict[str, Any]
    stale_outputs: tuple[str, ...] = ()

    def build(self, accelerator) -> torch.nn.Module:
        """The module that trains, in train mode."""
        raise NotImplementedError

    def collate(self, kind: str, items: list[Any]) -> dict[str, Any]:
        """A micro-batch's tensors (the Trainer moves them to the device)."""
        raise NotImplementedError

    def loss(self, model, kind: str, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss step: the micro-batch's loss and statistics to log (``model``: prepared)."""
        raise NotImplementedError

    def num_tokens(self, batch: dict[str, Any]) -> int:
        """The micro-batch's real tokens (logged with each step)."""
        return 0

    def validate(self, model, point: Point) -> Validation | None:
        """Validate the model at ``point``; None: nothing to validate there."""
        return None

    def save(self, model, path: Path, step: int) -> None:
        """Write the trainable weights into the checkpoint directory ``path``."""
        raise NotImplementedError

    def load(self, model, path: Path) -> None:
        """Load a checkpoint's weights (written by ``save``) into ``model``, in place."""
        raise NotImplementedError

    def publish(self, model, step: int, selected: str) -> None:
        """Write the selected model (``best`` or ``last``) where the stage's readers load it."""
        raise NotImplementedError

    def signature(self, model) -> dict[str, Any] | None:
        """What a checkpoint's weights fit (a checkpoint of another architecture is refused)."""
        return None

    def summary(self, result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
        """The stage's summary, and what else ``metrics.json`` holds besides it."""
        raise NotImplementedError
