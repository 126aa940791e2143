"""Options every trainer config (``TrainerConfig``, ``CriticConfig``) declares alike."""

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
    """``validate`` checks > 0 and not NaN; ``inf`` would train a NaN model."""
    if lr is not None and not math.isfinite(lr):
        raise ConfigError(f"{section}.lr: must be a finite number > 0, got {lr!r}")
