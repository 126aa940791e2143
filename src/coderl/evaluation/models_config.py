"""Settings of the ``compare-models`` stage (beside :mod:`coderl.evaluation.models_stage`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt, validate

#: the labels that name this run's models (anything else is a model spec: default, a directory)
RUN_MODELS = ("base", "sft", "rl")
NOT_FINGERPRINTED = ("batch_size", "threads", "progress", "base_model")  # base: its digest counts


@dataclass
class ModelsEvalConfig:
    """The models of a run side by side on problems none of them trained on."""

    models: list[str] = opt(list(RUN_MODELS), "Models compared, the first the reference of the "
                            "differences: base (the model the run started from: sft.model, else "
                            "generation.model), sft, rl (this run's), or a model spec (repeatable).")
    base_model: str | None = opt(None, "The model the label base means.", shown="the model the run "
                                 "started from (its config.yaml: sft.model, else generation.model)")
    source: str = opt("mbpp-heldout", "Problem set of the comparison (mbpp-heldout: only the first "
                      "assert shown, every assert judged; the hack rate is reported).")
    split: str | None = opt("test", "Its split (MBPP test: problems the train split never shows).")
    start: int | None = opt(None, "First problem position.", ge=0)
    end: int | None = opt(50, "One past the last problem position (none: all).", ge=1)
    num_seqs: int = opt(0, "Sampled programs per problem besides the greedy one (0: greedy only).", ge=0)
    temperature: float = opt(0.8, "Sampling temperature (num_seqs > 0).", gt=0)
    top_p: float = opt(0.95, "Nucleus sampling (num_seqs > 0).", gt=0, le=1)
    max_new_tokens: int = opt(256, "Most tokens per program.", ge=1)
    seed: int = opt(0, "Seed of sampling and of the bootstrap.", ge=0)
    resamples: int = opt(1000, "Paired-bootstrap resamples of the differences.", ge=10)
    batch_size: int = opt(64, "Sequences decoded together.", ge=1)
    threads: int | None = opt(None, "Torch CPU threads (default: torch's choice).", ge=1)
    progress: bool = opt(True, "Show progress bars.", cli=False)

    def __post_init__(self) -> None:
        validate(self, "compare")
        if not self.models:
            raise ConfigError("compare.models: needs at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"compare.models: {self.models} names a model twice")
