"""Options every trainer config declares alike (the actor's ``TrainerConfig`` and the critic's
``CriticConfig``, both run by :class:`coderl.training.engine.Trainer`): where training runs, and
the check that a learning rate is a usable number."""

from __future__ import annotations

import math

from ..config import ConfigError, opt


def device_option():
    return opt("auto", "auto (accelerate's choice: a GPU when there is one), cpu, cuda.",
               choices=("auto", "cpu", "cuda"))


def threads_option():
    return opt(None, "Torch CPU threads (default: torch's choice).", ge=1)


def progress_option():
    return opt(True, "Show a progress bar.", cli=False)


def check_learning_rate(lr: float | None, section: str) -> None:
    """A learning rate must be finite (``validate`` checks it is > 0 and not NaN): ``inf`` would
    train a NaN model."""
    if lr is not None and not math.isfinite(lr):
        raise ConfigError(f"{section}.lr: must be a finite number > 0, got {lr!r}")
