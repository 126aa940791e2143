"""The ``train-rl`` stage's config (beside ``rl_trainer.py``): every option of ``coderl train-rl``
and of the pipeline's ``rl`` section."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt
from .base_config import NOT_FINGERPRINTED, TrainerConfig
from .options import gold_style_option

__all__ = ["RLConfig", "NOT_FINGERPRINTED"]

#: origins a sample can be trained on (gold programs are the cross-entropy steps' data)
TRAINABLE_ORIGINS = ("sampled", "greedy", "refined", "repaired")


@dataclass
class RLConfig(TrainerConfig):
    """CodeRL's offline policy gradient: L_rl = - mean_t (r(W^s) - r(W^b)) q̂(w_t) log p(w_t | w_<t, D),
    alternating with cross-entropy steps on gold programs."""

    SECTION = "rl"
    ADDED_SETTINGS = ("baseline", "gold_style")  # at its default, absent from fingerprints (older boxes resume)
    DEFAULT_LR = {"lora": 5e-5, "full": 5e-6}

    init: str = opt("sft", "Starting model: sft (this run's SFT model, <run>/sft/), or a model spec "
                    "(default, a Hugging Face directory, a LoRA adapter directory). The samples "
                    "must come from this model.")
    origins: list[str] = opt(["sampled"], "Sample origins trained on with the RL loss (repeatable; "
                             "greedy programs are the baseline W^b).", choices=TRAINABLE_ORIGINS)
    relative_return: bool = opt(True, "Return r(W^s) - r(W^b), W^b the problem's greedy program "
                                "(r(W^b) = 0 when it has none); off: r(W^s).")
    baseline: str = opt("greedy", "r(W^b): greedy (the problem's greedy program's reward, CodeRL) or "
                        "mean (the mean reward of the problem's trained samples: returns centred per "
                        "problem, as online RL's group baseline).", choices=("greedy", "mean"))
    critic_weights: bool = opt(True, "Weight each token by the critic's q̂(w_t) (the critic scores "
                               "file); off, or without scores: q̂ = 1 (the paper's ablation).")
    partial_credit: bool = opt(False, "RLTF's reward for failed programs: -0.3 + 1.3 x the share of "
                               "tests passed (default: CodeRL's -0.3).")
    skip_zero_return: bool = opt(True, "Drop samples whose return is 0 (no gradient from the RL "
                                 "loss; saves their forward passes).")
    share_prompts: bool = opt(True, "Keep each problem's samples together in the data order and "
                              "run its prompt once for them in a micro-batch (causal LMs; the same "
                              "loss and gradients per micro-batch, about 2x fewer tokens on MBPP; not with "
                              "gradient_checkpointing).")
    ce_every: int = opt(1, "One cross-entropy step on gold programs after every N RL steps (1: "
                        "alternate; 0: RL steps only).", ge=0)
    kl_coef: float = opt(0.0, "Weight of a KL penalty to the starting model on the sampled tokens "
                         "(0: off; LoRA computes the reference with the adapters disabled, full "
                         "fine-tuning keeps a frozen copy).", ge=0)
    measure_kl: bool = opt(False, "Log the KL to the starting model on the sampled tokens even with "
                           "kl_coef 0 (one more forward pass per RL micro-batch).")
    max_solutions: int = opt(0, "Gold programs per problem in the cross-entropy steps (0: all).", ge=0)
    gold_reorder: bool = opt(True, "As train-actor's --gold-reorder (gold programs with code "
                             "before the pre-filled function).")
    gold_style: str = gold_style_option("As train-actor's --gold-style (the gold programs' layout in the "
                                        "cross-entropy steps: keep it as the SFT model was trained).")
    epochs: int = opt(1, "Passes over the RL examples (sampled programs).", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.origins:
            raise ConfigError("rl.origins: needs at least one origin (e.g. sampled)")
