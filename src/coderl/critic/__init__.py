"""coderl.critic: predict a program's test outcome from problem + program, token by token.

    from coderl.critic import CriticConfig, train_critic, ScoreConfig, score, read_scores

    train_critic(problems, run_dir, CriticConfig(num_classes=2), samples_path=..., results_path=...)
    score(problems, run_dir, ScoreConfig(), samples_path=..., results_path=...)
    scores = read_scores(run_dir / SCORES_FILE)          # {(problem_id, index): SampleScores}

Modules: ``data`` (training data: join, gold, split), ``model`` (CriticModel), ``critic_config`` +
``critic_trainer`` (the ``train-critic`` stage) with ``critic_task`` (what the shared
``coderl.training.engine.Trainer`` needs of a critic) and ``feature_cache`` (head mode's cached
hidden states), ``score_config`` + ``scoring`` (the ``critic-score`` stage), ``scores`` (the
CriticScores record), ``features`` (the feature baseline), ``metrics``.
"""

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


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CriticConfig", "ScoreConfig", *_LAZY]
