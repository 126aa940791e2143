"""The ``train-online`` stage's config (beside ``online_trainer.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt
from .advantages import KINDS
from .base_config import BEST_METRICS, NOT_FINGERPRINTED as BASE_NOT_FINGERPRINTED, TrainerConfig

__all__ = ["OnlineConfig", "NOT_FINGERPRINTED"]
NOT_FINGERPRINTED = BASE_NOT_FINGERPRINTED + ("gen_batch_size",)


@dataclass
class OnlineConfig(TrainerConfig):
    """Online RL: rounds of sample -> execute -> reward -> update with the current policy."""

    SECTION = "online"
    DEFAULT_LR = {"lora": 1e-4, "full": 1e-5}

    init: str = opt("sft", "Starting model: sft (this run's), or a model spec (default, a directory).")
    rounds: int = opt(4, "Rounds; each samples, executes and takes steps_per_round optimizer steps.", ge=1)
    problems_per_round: int = opt(8, "Train problems per round (in a seeded order, cycling).", ge=1)
    group_size: int = opt(4, "Programs sampled per problem per round (G).", ge=1)
    advantage: str = opt("group", "coderl (reward minus the greedy program's: one greedy program per "
                         "problem more), group (minus the group mean: Dr. GRPO) or group_std (also "
                         "divided by the group's std: GRPO).", choices=KINDS)
    skip_equal: bool = opt(True, "Leave out groups whose rewards are all equal (counted per round).")
    reward: str = opt("coderl", "coderl (CodeRL's table), partial (RLTF's partial credit for failed "
                      "programs), pass_fail (1 passed, 0 otherwise), pass_ratio (the share of tests passed) or "
                      "module:function, a callable "
                      "(problem, program, result) -> float.")
    kl_coef: float = opt(0.0, "Weight of a KL penalty to the starting model on the sampled tokens "
                         "(LoRA: the same model with the adapters off, no second copy).", ge=0)
    measure_kl: bool = opt(True, "Log the KL to the starting model even with kl_coef 0.")
    temperature: float = opt(0.8, "Sampling temperature.", gt=0)
    top_p: float = opt(0.95, "Nucleus sampling.", gt=0, le=1)
    max_new_tokens: int = opt(256, "Most tokens per program.", ge=1)
    steps_per_round: int = opt(1, "Optimizer steps per round: the round's groups split into this many "
                               "mini-batches; steps after the first are off-policy and use clipped "
                               "importance ratios (PPO / GRPO) against the policy that sampled the round.",
                               ge=1)
    clip: float = opt(0.2, "Clip range of the importance ratio (1 - clip, 1 + clip) when "
                      "steps_per_round > 1.", gt=0, lt=1)
    gen_batch_size: int = opt(64, "Sequences decoded together.", ge=1)
    # validation: an online "epoch" is a round
    eval_every: int = opt(0, "Validation (loss on the validation problems' gold programs; pass@1 with "
                          "--val-pass-every) every N optimizer steps (0: after every round) and at the end.", ge=0)
    best_metric: str = opt("last", "Publish the last model (validation only logged: the learning "
                           "curve), or the round with the best greedy pass@1 (needs --val-pass-every) "
                           "or the lowest loss on the validation gold programs.", choices=BEST_METRICS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.advantage != "coderl" and self.group_size < 2:
            raise ConfigError(f"online.group_size: {self.group_size}: a group baseline "
                              f"(advantage {self.advantage}) needs at least 2 programs per problem")
        if self.steps_per_round > self.problems_per_round:
            raise ConfigError(f"online.steps_per_round: {self.steps_per_round} mini-batches need at least as "
                              f"many problems per round (problems_per_round: {self.problems_per_round})")
