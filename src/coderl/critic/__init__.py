"""coderl.critic: predict a program's test outcome from problem + program, token by token.

Stages ``train-critic`` (``critic_trainer``) and ``critic-score`` (``scoring``); see ARCHITECTURE.md.
"""

from coderl import lazy_exports

from .critic_config import CriticConfig
from .score_config import ScoreConfig

# the rest imports torch: loaded on first use, so that the CLI reads the configs quickly
_LAZY = {
    "train_critic": "critic_trainer", "critic_dir": "critic_trainer", "resolve_checkpoint": "critic_trainer",
    "CRITIC_DIR": "critic_trainer", "BEST_DIR": "critic_trainer", "CHECKPOINTS_DIR": "critic_trainer",
    "METRICS_FILE": "critic_trainer",
    "CriticError": "data", "Example": "data", "TrainingData": "data", "build_training_data": "data",
    "CriticModel": "model",
    "SCORES_FILE": "scores", "CriticScores": "scores", "SampleScores": "scores", "read_scores": "scores",
    "write_scores": "scores",
    "score": "scoring", "rank_by_critic": "scoring",
}
__getattr__ = lazy_exports(__name__, _LAZY)
__all__ = ["CriticConfig", "ScoreConfig", *_LAZY]
