"""coderl.training: the actor's SFT warm-up and CodeRL's critic-weighted policy gradient, and the
one Trainer every training stage runs on (the critic's too; see ARCHITECTURE.md): ``train_sft``
writes ``<run>/sft/``, ``train_rl`` ``<run>/rl/``.
"""

from __future__ import annotations

from coderl import lazy_exports

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
__getattr__ = lazy_exports(__name__, _LAZY)
