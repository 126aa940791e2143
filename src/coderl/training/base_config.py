"""The settings the actor trainers share (``SFTConfig``, ``RLConfig``, ... extend it; they set
:attr:`SECTION`, the YAML section and prefix of error messages, and their default learning rates).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt, validate
from .options import (check_learning_rate, device_option, keep_checkpoints_option, log_every_option, max_steps_option,
                      progress_option, save_every_option, threads_option)

BEST_METRICS = ("loss", "pass@1", "last")

#: settings that do not change what training computes (resuming under other values is fine)
NOT_FINGERPRINTED = ("max_steps", "save_every", "keep_checkpoints", "log_every", "eval_batch_size",
                     "threads", "progress", "device", "val_pass_batch_size", "release_memory")


@dataclass
class TrainerConfig:
    SECTION = "training"
    DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}

    # -- the model --------------------------------------------------------------------------------
    mode: str = opt("lora", "What trains: lora (LoRA adapters through peft on the linear layers; "
                    "the CPU default, the saved model is an adapter directory) or full (every "
                    "weight; the saved model is a Hugging Face checkpoint).", choices=("lora", "full"))
    lora_r: int = opt(16, "mode=lora: LoRA rank.", ge=1)
    lora_alpha: int = opt(32, "mode=lora: LoRA alpha (scale alpha/r).", ge=1)
    lora_dropout: float = opt(0.05, "mode=lora: dropout on the adapters' input.", ge=0, lt=1)
    lora_targets: list[str] = opt(["all-linear"], "mode=lora: module names the adapters wrap "
                                  "(repeatable; all-linear: every linear layer but the LM head).")
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass (less "
                                       "memory, ~30% slower).")
    prompt_style: str = opt("auto", "Prompt format, as generation's --prompt-style: auto (the chat "
                            "template when the tokenizer has one), chat, plain. Train and generate "
                            "with the same one.", choices=("auto", "chat", "plain"))
    max_prompt_tokens: int = opt(1024, "Longer prompts keep their end (as generation truncates "
                                 "them).", ge=1)
    max_target_tokens: int = opt(512, "Longer programs keep their start (their tail is not "
                                 "trained on).", ge=1)
    # -- the optimisation -------------------------------------------------------------------------
    epochs: int = opt(2, "Passes over the training examples.", ge=1)
    batch_size: int = opt(1, "Programs per micro-batch. 1 (the CPU default) needs no padding and "
                          "keeps LoRA RL on the default model under 4 GiB peak RSS (2: ~4.3 GiB); "
                          "raise it on a GPU.", ge=1)
    grad_accum: int = opt(8, "Micro-batches per optimizer step (programs per step = batch_size x "
                          "grad_accum x processes).", ge=1)
    lr: float | None = opt(None, "Learning rate (finite, > 0; default per mode, see DEFAULT_LR).", gt=0)
    weight_decay: float = opt(0.0, "AdamW weight decay.", ge=0)
    warmup_ratio: float = opt(0.05, "Share of the optimizer steps with a linear warm-up.", ge=0, lt=1)
    lr_schedule: str = opt("linear", "Decay after the warm-up.", choices=("linear", "cosine", "constant"))
    max_grad_norm: float = opt(1.0, "Gradient clipping (0: none).", ge=0)
    seed: int = opt(0, "Seed of the adapters' initialisation, the data order and dropout.", ge=0)
    mixed_precision: str = opt("no", "accelerate's mixed precision (bf16/fp16 on a GPU).",
                               choices=("no", "bf16", "fp16"))
    # -- validation and model selection -----------------------------------------------------------
    val_source: str | None = opt("mbpp", "Validation problems (a coderl problem source: mbpp, an "
                                 "APPS folder, a JSONL file; null: no validation).")
    val_split: str | None = opt("validation", "Split of the validation problems (MBPP: validation, "
                                "task ids 511-600).")
    val_limit: int = opt(90, "Use the first N validation problems (0: all).", ge=0)
    eval_every: int = opt(0, "Validation loss on the validation problems' gold programs every N "
                          "optimizer steps (0: at every epoch's end) and at the end.", ge=0)
    val_pass_every: int = opt(0, "Also a greedy pass@1 on the first --val-pass-problems "
                              "validation problems (generate + execute) at every N-th validation "
                              "(0: never).", ge=0)
    val_pass_problems: int = opt(20, "Problems of the greedy pass@1 check.", ge=1)
    val_max_new_tokens: int = opt(256, "Most tokens per program in the pass@1 check.", ge=1)
    best_metric: str = opt("loss", "Keep the checkpoint with the lowest validation loss, or the "
                           "highest greedy pass@1 (needs --val-pass-every; ties: lower loss), or "
                           "the last one (validation only logged).", choices=BEST_METRICS)
    patience: int = opt(0, "Early stopping: stop after N validations without a better model "
                        "(0: never).", ge=0)
    # -- running (not part of the fingerprint) ----------------------------------------------------
    max_steps: int | None = max_steps_option()
    save_every: int = save_every_option(50)
    keep_checkpoints: int = keep_checkpoints_option()
    log_every: int = log_every_option(1)
    eval_batch_size: int = opt(8, "Programs per batch in the validation loss.", ge=1)
    val_pass_batch_size: int = opt(16, "Sequences decoded together in the pass@1 check.", ge=1)
    release_memory: bool = opt(True, "Linux CPU: large tensors are allocated with mmap (glibc "
                                "mallopt M_MMAP_THRESHOLD = 1 MB) and the heap is trimmed after "
                                "every step, so freed activations go back to the system instead of "
                                "piling up as fragmentation (the peak RSS of LoRA RL on the default "
                                "model: see benchmarks/training.py).")
    device: str = device_option()
    threads: int | None = threads_option()
    progress: bool = progress_option()

    def __post_init__(self) -> None:
        validate(self, self.SECTION)
        check_learning_rate(self.lr, self.SECTION)
        if self.mode == "lora" and not self.lora_targets:
            raise ConfigError(f"{self.SECTION}.lora_targets: needs at least one module name (or all-linear)")
        if self.best_metric == "last" and self.patience:
            raise ConfigError(f"{self.SECTION}.patience: {self.patience} stops after validations without a better "
                              "model, but best_metric last scores none: set best_metric loss or pass@1, or patience 0")
        if self.best_metric == "pass@1" and not self.val_pass_every:
            raise ConfigError(f"{self.SECTION}.best_metric: pass@1 needs val_pass_every > 0")
        if self.best_metric == "pass@1" and not self.val_source:
            raise ConfigError(f"{self.SECTION}.best_metric: pass@1 needs validation problems (val_source)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.DEFAULT_LR[self.mode]
