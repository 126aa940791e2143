"""Options every trainer config (``TrainerConfig``, ``CriticConfig``) declares alike."""

from __future__ import annotations

import math
from pathlib import Path

from ..config import ConfigError, opt
from ..rundir import read_meta


GOLD_STYLES = ("raw", "normalized")   # training.data.normalized_gold


def gold_style_option(help: str):
    """``gold_style``: the layout of the gold programs trained (or validated) on; see train-actor's."""
    return opt("raw", help, choices=GOLD_STYLES)


def prompt_shapes_option(help: str):
    """``prompt_shapes``: the prompt shapes a program is trained in (``training.data.SHAPES``)."""
    return opt(["native"], help)


def check_prompt_shapes(section: str, shapes: list[str]) -> None:
    from .data import SHAPES  # here: data imports the models package, heavier than a config needs

    if not shapes or any(s not in SHAPES for s in shapes) or len(set(shapes)) != len(shapes):
        raise ConfigError(f"{section}.prompt_shapes: {shapes!r}: one or more of {list(SHAPES)}, each once")


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


#: the stages whose boxes record the gold layout they trained or validated on
GOLD_STAGES = ("train-actor", "train-rl", "train-expert")


def recorded_gold_style(path: str | Path | None) -> str | None:
    """The ``gold_style`` a model directory was trained with, as its box's sidecar records it
    (``train-actor`` / ``train-rl`` / ``train-expert``); None where ``path`` is no such box (the
    default model, a GGUF file, a hub name, a checkpoint, an exported folder)."""
    p = Path(str(path)).expanduser().resolve() if path else None
    if p is None or not p.is_dir() or not p.name:  # "/" has no sidecar
        return None
    meta = read_meta(p)
    if not meta or meta.get("stage") not in GOLD_STAGES:
        return None
    return (meta.get("fingerprint", {}).get("config") or {}).get("gold_style", "raw")  # absent: the default


def check_gold_style(cfg, model: str, run, *, key: str) -> None:
    """``cfg.gold_style`` must be the layout the starting model was trained on, where that model is a
    box with a sidecar (this run's ``sft`` or another run's ``sft/`` directory, :func:`recorded_gold_style`):
    RL's CE steps and expert iteration's validation would otherwise use another layout than SFT did,
    silently. Models without a sidecar (the default, checkpoints, exported folders) are not checked."""
    path = run.model(model)
    trained = recorded_gold_style(path)
    if trained is not None and trained != cfg.gold_style:
        raise ConfigError(f"{key} {model!r} ({path}) was trained with gold_style {trained!r}, but "
                          f"{cfg.SECTION}.gold_style is {cfg.gold_style!r}: its gold programs would be in another "
                          f"layout than SFT trained on; set --gold-style {trained} (a recipe: "
                          f"{cfg.SECTION}.gold_style: {trained})")
