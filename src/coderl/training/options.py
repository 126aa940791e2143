"""Options every trainer config (``TrainerConfig``, ``CriticConfig``) declares alike."""

from __future__ import annotations

import math

from ..config import ConfigError, opt


GOLD_STYLES = ("raw", "normalized")   # training.data.normalized_gold


def gold_style_option(help: str):
    """``gold_style``: the layout of the gold programs trained (or validated) on; see train-actor's."""
    return opt("raw", help, choices=GOLD_STYLES)


def device_option():
    return opt("auto", "auto (accelerate's choice: a GPU when there is one), cpu, cuda.",
               choices=("auto", "cpu", "cuda"))


def threads_option():
    return opt(None, "Torch CPU threads (default: torch's choice).", ge=1)


def progress_option():
    return opt(True, "Show a progress bar.", cli=False)


def max_steps_option():
    return opt(None, "Stop after this many optimizer steps in all (a budget: the run ends there validated "
               "and complete; a rerun with a larger budget continues it).", ge=1)


def save_every_option(default: int):
    return opt(default, "Write a resumable checkpoint every N optimizer steps (and at every validation; "
               "0: only there and at the end).", ge=0)


def keep_checkpoints_option():
    return opt(1, "Resumable checkpoints kept (the newest; a selected best model is kept apart).", ge=1)


def log_every_option(default: int):
    return opt(default, "Log the training loss every N optimizer steps.", ge=1)


def check_learning_rate(lr: float | None, section: str) -> None:
    """``validate`` checks > 0 and not NaN; ``inf`` would train a NaN model."""
    if lr is not None and not math.isfinite(lr):
        raise ConfigError(f"{section}.lr: must be a finite number > 0, got {lr!r}")
