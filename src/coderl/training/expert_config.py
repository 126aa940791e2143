"""The ``train-expert`` stage's config (beside ``expert_trainer.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt
from .base_config import NOT_FINGERPRINTED, TrainerConfig
from .options import gold_style_option

__all__ = ["ExpertConfig", "NOT_FINGERPRINTED"]


@dataclass
class ExpertConfig(TrainerConfig):
    """Expert iteration: fine-tune the model that sampled on its own passing programs."""

    SECTION = "expert"
    ADDED_SETTINGS = ("gold_style",)  # at its default, absent from fingerprints (older boxes resume)

    model: str = opt("default", "The model that generated the run's samples (default, a model "
                     "spec, or this run's sft): it is fine-tuned on its own passing programs.")
    max_per_problem: int = opt(4, "Distinct passing programs kept per problem (0: all).", ge=0)
    origins: list[str] = opt(["sampled"], "Sample origins trained on (sampled; greedy too).")
    gold_style: str = gold_style_option("As train-actor's --gold-style, for the validation programs (gold) "
                                        "that select the checkpoint: keep it as the SFT model was trained.")

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [o for o in self.origins if o not in ("sampled", "greedy")]
        if not self.origins or bad:
            raise ConfigError(f"expert.origins: {self.origins!r}: sampled and/or greedy")
