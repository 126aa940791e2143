"""The ``train-expert`` stage's config (beside ``expert_trainer.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt
from .base_config import NOT_FINGERPRINTED, TrainerConfig
from .options import check_prompt_shapes, gold_style_option, prompt_shapes_option

__all__ = ["ExpertConfig", "NOT_FINGERPRINTED"]


@dataclass
class ExpertConfig(TrainerConfig):
    """Expert iteration: fine-tune the model that sampled on its own passing programs."""

    SECTION = "expert"
    ADDED_SETTINGS = ("gold_style", "prompt_shapes")  # at their defaults, absent from fingerprints (older boxes resume)

    model: str = opt("default", "The model that generated the run's samples (default, a model "
                     "spec, or this run's sft): it is fine-tuned on its own passing programs.")
    max_per_problem: int = opt(4, "Distinct passing programs kept per problem (0: all).", ge=0)
    origins: list[str] = opt(["sampled"], "Sample origins trained on (sampled; greedy too).")
    prompt_shapes: list[str] = prompt_shapes_option(
        "Prompt shapes each kept program is trained in: native (the problem's prompt, the program as the "
        "model wrote it) and humaneval (the same program cut after its signature: HumanEval's prompt "
        "shape, as train-actor's --prompt-shapes; fine-tuning on one shape only costs the other).")
    gold_style: str = gold_style_option("As train-actor's --gold-style, for the validation programs (gold) "
                                        "that select the checkpoint: keep it as the SFT model was trained.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_prompt_shapes(self.SECTION, self.prompt_shapes)
        bad = [o for o in self.origins if o not in ("sampled", "greedy")]
        if not self.origins or bad:
            raise ConfigError(f"expert.origins: {self.origins!r}: sampled and/or greedy")
