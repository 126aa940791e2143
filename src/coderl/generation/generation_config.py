"""The ``generate`` stage's config (beside ``stage.py``): every option of ``coderl generate``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ConfigError, opt, validate

#: settings that do not change which samples a run writes (resuming under other values is fine)
NOT_FINGERPRINTED = ("batch_size", "threads", "progress", "device", "backend", "ray_address", "ray_actors")


@dataclass
class GenerationConfig:
    model: str = opt("default", "Model: default (SmolLM2-135M-Instruct), gemma3-270m, a local Hugging "
                     "Face directory (causal LM or T5/CodeT5), a LoRA adapter directory or a .gguf file.")
    num_seqs: int = opt(10, "Sampled programs per problem (indices 0..num_seqs-1).", ge=0)
    greedy: bool = opt(True, "One extra greedy program per problem (index num_seqs; RL's baseline).")
    batch_size: int = opt(64, "Sequences decoded together (on a CPU 64 is a good size; on a "
                          "GPU use 128 or more).", ge=1)
    temperature: float = opt(0.8, "Sampling temperature (> 0 when num_seqs > 0).", ge=0)
    top_p: float = opt(0.95, "Nucleus sampling: keep the smallest token set with this much probability.", gt=0, le=1)
    max_new_tokens: int = opt(256, "Most tokens generated per program.", ge=1)
    max_prompt_tokens: int = opt(1024, "Longer prompts are truncated (their end is kept).", ge=1)
    seed: int = opt(0, "Run seed: each program draws its noise from (seed, problem, index), so a "
                    "run reproduces its samples whatever the batch size, resume or backend.", ge=0)
    prompt_style: str = opt("auto", "auto: the chat template when the tokenizer has one; chat; plain "
                            "(the source's own format).", choices=("auto", "chat", "plain"))
    stop: list[str] = opt([], "Extra stop strings (repeatable).")
    device: str = opt("cpu", "Torch device: cpu, cuda, cuda:N or mps.")
    dtype: str = opt("float32", "Model dtype.", choices=("float32", "bfloat16", "float16"))
    threads: int | None = opt(None, "Torch CPU threads (default: torch's choice).", ge=1)
    progress: bool = opt(True, "Show a progress bar.", cli=False)
    backend: str = opt("local", "Where programs are decoded: local (this process) or ray (model replicas in "
                       "Ray actors; the driver writes every record). The samples do not depend on it.",
                       choices=("local", "ray"))
    ray_address: str | None = opt(None, "backend=ray: the cluster to join (e.g. auto); default: a local Ray "
                                  "started in this process. The model path must be readable on every node.")
    ray_actors: int = opt(2, "backend=ray: model replicas (spread over the cluster's nodes; on cuda one GPU "
                          "each).", ge=1)

    def __post_init__(self) -> None:
        validate(self, "generation")
        if self.num_seqs == 0 and not self.greedy:
            raise ConfigError("generation.num_seqs: must be >= 1 (or 0 with greedy=true)")
        if self.num_seqs and self.temperature <= 0:
            raise ConfigError("generation.temperature: sampling needs temperature > 0 (greedy=true "
                              "gives the greedy program)")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"generation.device: {self.device!r} is not a device; expected cpu, "
                              "cuda, cuda:N or mps")
