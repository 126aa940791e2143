"""coderl.training: the actor's SFT warm-up and CodeRL's critic-weighted policy gradient.

    from coderl.training import SFTConfig, RLConfig, train_sft, train_rl

    train_sft(problems, run_dir, SFTConfig())                     # -> <run>/sft/
    train_rl(problems, run_dir, RLConfig(init="sft"), samples_path=..., results_path=...,
             scores_path=...)                                     # -> <run>/rl/

Modules: ``sft_config`` / ``sft_trainer``, ``rl_config`` / ``rl_trainer`` (the stages),
``data`` (training examples in generation's prompt format), ``losses`` (SFT and RL losses),
``rewards`` (reward callables), ``engine`` (the accelerate loop), ``checkpoint`` (save/resume).
"""

from __future__ import annotations

from .base_config import TrainerConfig
from .data import Example, TrainingError, build_gold_examples, build_rl_examples
from .rewards import coderl_reward, relative_return
from .rl_config import RLConfig
from .sft_config import SFTConfig

__all__ = ["SFTConfig", "RLConfig", "TrainerConfig", "train_sft", "train_rl", "TrainingError",
           "Example", "build_gold_examples", "build_rl_examples", "coderl_reward", "relative_return",
           "step_kind", "schedule", "SFT_DIR", "RL_DIR"]


def __getattr__(name: str):  # the trainers import torch-heavy modules: only when used
    if name in ("train_sft", "SFT_DIR", "sft_dir"):
        from . import sft_trainer

        return getattr(sft_trainer, name)
    if name in ("train_rl", "RL_DIR", "rl_dir", "step_kind", "schedule", "resolve_init"):
        from . import rl_trainer

        return getattr(rl_trainer, name)
    raise AttributeError(f"module 'coderl.training' has no attribute {name!r}")
