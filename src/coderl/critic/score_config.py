"""The ``critic-score`` stage's config (beside ``scoring.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import opt, validate

#: settings that do not change the scores (resuming under other values is fine)
NOT_FINGERPRINTED = ("batch_size", "threads", "progress", "device", "share_prompt", "reuse_features")


@dataclass
class ScoreConfig:
    checkpoint: str = opt("best", "The critic: best or last (of <run>/critic/, written by "
                          "train-critic) or a critic checkpoint directory.")
    batch_size: int = opt(32, "Programs per batch.", ge=1)
    share_prompt: bool = opt(True, "Causal critics: run a problem's prompt once and reuse its KV "
                             "cache for all its programs (same scores, fewer tokens).")
    reuse_features: bool = opt(True, "A head-mode critic: take the backbone's hidden states of programs it was "
                               "trained on from its cache (critic/features/, float16, what the head trained on) "
                               "instead of running the backbone again.")
    device: str = opt("auto", "auto (a GPU when there is one), cpu, cuda.", choices=("auto", "cpu", "cuda"))
    threads: int | None = opt(None, "Torch CPU threads (default: torch's choice).", ge=1)
    progress: bool = opt(True, "Show a progress bar.", cli=False)

    def __post_init__(self) -> None:
        validate(self, "critic_score")
