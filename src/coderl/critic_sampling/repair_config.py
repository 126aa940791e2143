"""Settings of the ``train-repair`` stage (beside :mod:`coderl.critic_sampling.repair_trainer`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt
from ..training.base_config import NOT_FINGERPRINTED as TRAINER_NOT_FINGERPRINTED, TrainerConfig

__all__ = ["RepairConfig", "NOT_FINGERPRINTED"]
#: no validation set (repair pairs need executed samples): the model kept is the last one, so
#: which metric would pick it decides nothing
NOT_FINGERPRINTED = TRAINER_NOT_FINGERPRINTED + (
    "best_metric", "val_source", "val_split", "val_limit", "eval_every", "val_pass_every",
    "val_pass_problems", "val_max_new_tokens", "val_pass_batch_size", "patience")


@dataclass
class RepairConfig(TrainerConfig):
    """The repair model: the actor fine-tuned on (problem, failed program, its verdict) -> a
    passing program of the problem, from the run's executed samples."""

    SECTION = "repair"
    DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}

    model: str = opt("default", "Model to fine-tune (the actor: default, a model spec, or this "
                     "run's sft / rl).")
    max_pairs: int = opt(4, "Failed programs per problem turned into pairs (distinct programs).", ge=1)
    use_samples: bool = opt(True, "Targets: a passing sample of the problem first (the actor's own "
                            "style), gold programs after; off: gold programs only.")
    val_source: str | None = opt(None, "No validation: the repair pairs need executed samples of "
                                 "the problems; the model kept is the last.", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_source:
            raise ConfigError("repair.val_source: train-repair has no validation set (its pairs need "
                              "executed samples); the model kept is the last one")
