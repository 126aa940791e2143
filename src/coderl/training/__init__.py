"""coderl.training: the actor's SFT warm-up and CodeRL's critic-weighted policy gradient, and the
one Trainer every training stage runs on (the critic's too; see ARCHITECTURE.md).

    from coderl.training import SFTConfig, RLConfig, train_sft, train_rl

    train_sft(problems, run_dir, SFTConfig())                     # -> <run>/sft/
    train_rl(problems, run_dir, RLConfig(init="sft"), samples_path=..., results_path=...,
             scores_path=...)                                     # -> <run>/rl/
"""

from __future__ import annotations

from .base_config import TrainerConfig
from .rl_config import RLConfig
from .sft_config import SFTConfig

__all__ = ["SFTConfig", "RLConfig", "TrainerConfig", "train_sft", "train_rl", "TrainingError",
           "Example", "build_gold_examples", "build_rl_examples", "coderl_reward", "relative_return",
           "step_kind", "schedule", "SFT_DIR", "RL_DIR"]

# the rest imports numpy or torch: loaded on first use, so that reading a config stays quick
_LAZY = {
    "TrainingError": "data", "Example": "data", "build_gold_examples": "data", "build_rl_examples": "data",
    "coderl_reward": "rewards",
    "relative_return": "objective", "step_kind": "objective", "schedule": "objective",
    "train_sft": "sft_trainer", "SFT_DIR": "sft_trainer",
    "train_rl": "rl_trainer", "RL_DIR": "rl_trainer", "resolve_init": "rl_trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'coderl.training' has no attribute {name!r}")
