"""Settings of the ``critic-sample`` stage (beside :mod:`coderl.critic_sampling.cs_stage`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt, validate

# (resuming a run under another batch size is allowed but draws other samples for the rounds still
# to come: the records are identical only under the same batch sizes)
NOT_FINGERPRINTED = ("batch_size", "critic_batch_size", "threads", "progress", "device")
REPAIR = ("none", "self", "run")  # or a model spec: a repair model trained elsewhere


@dataclass
class CriticSamplingConfig:
    """CodeRL's inference procedure on held-out problems: sample, refine and repair in rounds
    under a budget of generated programs per problem, then submit the best by the critic."""

    model: str = opt("default", "The actor: default, a model spec, or this run's sft / rl.")
    critic: str = opt("best", "The critic: best / last of this run's critic/, or a critic "
                      "checkpoint directory. A binary critic (num_classes 2) is CodeRL's; a "
                      "4-class one is used through its P(passed) (with a warning).")
    repair: str = opt("none", "Who repairs failed programs: none, self (the actor with a repair "
                      "prompt), run (this run's repair/, coderl train-repair) or a model spec.")
    refine: bool = opt(True, "Refine: continue programs from the prefix that ends at their token "
                       "with the critic's highest P(passed).")
    refine_failed: bool = opt(False, "Refine programs that fail the example tests too (the paper "
                              "refines only those that pass them).")
    cut: str = opt("line", "Where a refine prefix ends: token (after the best token) or line (at "
                   "the end of its line).", choices=("token", "line"))
    budget: int = opt(10, "Programs generated per problem, every one counted (first samples, "
                      "refinements, repairs).", ge=1)
    first: int = opt(5, "Programs sampled in the first round (<= budget).", ge=1)
    rounds: int = opt(1, "Refine / repair rounds after the first (the paper: 1); each spends an "
                      "equal share of what is left of the budget.", ge=0)
    enough: int = opt(0, "Stop a problem once it has this many programs passing its example "
                      "tests (0: spend the whole budget).", ge=0)
    submit: int = opt(5, "Programs submitted per problem (n of n@k): the example-passing ones "
                      "ranked by the critic, then by log-probability.", ge=1)
    source: str = opt("mbpp-heldout", "Problem set (held out: only the example tests are run "
                      "before the submission).")
    split: str | None = opt("test", "Its split.")
    start: int | None = opt(None, "First problem position.", ge=0)
    end: int | None = opt(100, "One past the last problem position (none: all).", ge=1)
    temperature: float = opt(0.8, "Sampling temperature.", gt=0)
    top_p: float = opt(0.95, "Nucleus sampling.", gt=0, le=1)
    max_new_tokens: int = opt(256, "Most tokens per program (or continuation).", ge=1)
    max_prompt_tokens: int = opt(1024, "Longer prompts keep their end; a problem whose prompt is longer "
                                 "is not refined (a prompt is never cut before a prefix): its slots "
                                 "go to repairs or fresh samples.", ge=1)
    prompt_style: str = opt("auto", "Prompt format of the actor and the repair model (as generation's): "
                            "auto, chat or plain.", choices=("auto", "chat", "plain"))
    seed: int = opt(0, "Seed (each round draws with its own seed derived from it).", ge=0)
    batch_size: int = opt(64, "Sequences decoded together.", ge=1)
    critic_batch_size: int = opt(32, "Programs the critic scores together.", ge=1)
    device: str = opt("cpu", "Torch device: cpu, cuda, cuda:N.")
    dtype: str = opt("float32", "Model dtype.", choices=("float32", "bfloat16", "float16"))
    threads: int | None = opt(None, "Torch CPU threads (default: torch's choice).", ge=1)
    progress: bool = opt(True, "Show progress bars.", cli=False)

    def __post_init__(self) -> None:
        validate(self, "critic_sample")
        if self.first > self.budget:
            raise ConfigError(f"critic_sample.first ({self.first}) must be <= budget ({self.budget})")
        if not self.repair.strip():
            raise ConfigError("critic_sample.repair: none, self, run or a model spec")

    @property
    def uses_repair(self) -> bool:
        return self.repair != "none"
