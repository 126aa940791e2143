"""The ``train-critic`` stage's config (beside ``critic_trainer.py``): every option of
``coderl train-critic`` and of the pipeline's ``critic`` section."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt, validate
from ..training.options import (check_learning_rate, device_option, keep_checkpoints_option, log_every_option,
                                max_steps_option, progress_option, save_every_option, threads_option)

#: settings that do not change what training computes (resuming under other values is fine)
NOT_FINGERPRINTED = ("max_steps", "save_every", "keep_checkpoints", "eval_batch_size", "log_every",
                     "threads", "progress", "device", "share_prompt")

#: default learning rate per mode (``lr: null``)
DEFAULT_LR = {"head": 1e-3, "top": 1e-4, "lora": 2e-4, "full": 2e-5}


@dataclass
class CriticConfig:
    # -- the model --------------------------------------------------------------------------------
    model: str = opt("default", "Backbone: default (SmolLM2-135M-Instruct), a local Hugging Face directory (causal LM, "
                     "or T5/CodeT5: problem to the encoder, program to the decoder) or a .gguf file.")
    num_classes: int = opt(4, "4: the outcome classes (compile_error, runtime_error, failed, passed); 2: the binary "
                           "critic (passed / not), used for critic sampling.", choices=(2, 4))
    mode: str = opt("head", "What trains: head (frozen backbone; its hidden states are computed once and cached, the "
                    "cheap CPU mode), top (the top --top-layers layers and the head), lora (LoRA adapters through "
                    "peft, and the head), full.", choices=("head", "top", "lora", "full"))
    top_layers: int = opt(2, "mode=top: how many of the backbone's top layers train.", ge=1)
    lora_r: int = opt(16, "mode=lora: LoRA rank.", ge=1)
    lora_alpha: int = opt(32, "mode=lora: LoRA alpha.", ge=1)
    lora_dropout: float = opt(0.05, "mode=lora: LoRA dropout.", ge=0, lt=1)
    lora_targets: list[str] = opt(["all-linear"], "mode=lora: module names the adapters wrap "
                                  "(repeatable; all-linear: every linear layer but the LM head).")
    head_hidden: int = opt(128, "Width of the head: Linear(d, H) -> ReLU -> Linear(H, C).", ge=1)
    # -- the data ---------------------------------------------------------------------------------
    include_gold: bool = opt(True, "Add each training problem's gold programs, labelled passed.")
    gold_in_validation: bool = opt(False, "Keep the gold programs of held-out problems in the validation set (off: "
                                   "held-out metrics are on generated programs only).")
    val_fraction: float = opt(0.15, "Share of problems held out for validation (split by problem, "
                              "seeded by --split-seed; 0: no held-out metrics).", ge=0, lt=1)
    test_fraction: float = opt(0.0, "Share of problems held out as a test split (after the "
                               "validation share): the best epoch is picked on validation and "
                               "reported on test, free of selection bias (0: none).", ge=0, lt=1)
    split_seed: int = opt(0, "Seed of the train/validation/test split of the problems.", ge=0)
    val_fold: int = opt(0, "Which share of the shuffled problems is held out: fold k holds out positions k x n_val ... "
                        "(k+1) x n_val - 1 (k = 0 .. 1/val_fraction - 1: disjoint folds for cross-validation).", ge=0)
    require_pass: bool = opt(False, "Stop with an error when a training problem has no passed "
                             "program (default: a warning; gold programs normally give one).")
    prompt_style: str = opt("auto", "How the problem is shown to the critic: auto (the chat template when the "
                            "tokenizer has one), chat, plain.", choices=("auto", "chat", "plain"))
    max_context_tokens: int = opt(768, "Longest problem context (longer ones keep their end).", ge=1)
    max_program_tokens: int = opt(512, "Longest program (longer ones keep their start; the tail "
                                  "gets no token values).", ge=1)
    padding_side: str = opt("right", "Padding of batched sequences (causal backbones).", choices=("right", "left"))
    # -- the optimisation -------------------------------------------------------------------------
    epochs: int = opt(10, "Passes over the training set.", ge=1)
    batch_size: int = opt(16, "Programs per micro-batch.", ge=1)
    grad_accum: int = opt(1, "Micro-batches per optimizer step.", ge=1)
    lr: float | None = opt(None, "Learning rate (finite, > 0; default per mode: head 1e-3, top 1e-4, "
                           "lora 2e-4, full 2e-5, the paper's).", gt=0)
    weight_decay: float = opt(0.0, "AdamW weight decay.", ge=0)
    warmup_ratio: float = opt(0.05, "Share of the optimizer steps with a linear warm-up.", ge=0, lt=1)
    max_grad_norm: float = opt(1.0, "Gradient clipping (0: none).", ge=0)
    class_weights: str = opt("none", "Cross-entropy class weights: none (the paper's) or balanced (inverse class "
                             "frequency in the training set).", choices=("none", "balanced"))
    seed: int = opt(0, "Seed of the head's initialisation, the data order and dropout.", ge=0)
    mixed_precision: str = opt("no", "accelerate's mixed precision.", choices=("no", "bf16", "fp16"))
    # -- model selection and metrics --------------------------------------------------------------
    best_metric: str = opt("auroc", "Keep the checkpoint with the best held-out auroc (passed vs "
                           "not) or loss, or the last epoch's (no selection on held-out data: "
                           "what cross-validation needs).", choices=("auroc", "loss", "last"))
    bootstrap: int = opt(1000, "Bootstrap resamples (of held-out problems) for the interval of the "
                         "AUROC difference critic - feature baseline.", ge=10)
    bootstrap_seed: int = opt(0, "Seed of the bootstrap.", ge=0)
    # -- running (not part of the fingerprint) ----------------------------------------------------
    max_steps: int | None = max_steps_option()
    save_every: int = save_every_option(200)
    keep_checkpoints: int = keep_checkpoints_option()
    log_every: int = log_every_option(10)
    eval_batch_size: int = opt(32, "Programs per batch in evaluation and feature caching.", ge=1)
    device: str = device_option()
    threads: int | None = threads_option()
    progress: bool = progress_option()
    share_prompt: bool = opt(True, "Causal backbones without gradients (caching, evaluation): run a problem's prompt "
                             "once and reuse its KV cache for all its programs (same result, ~3x fewer tokens).")

    def __post_init__(self) -> None:
        validate(self, "critic")
        check_learning_rate(self.lr, "critic")
        if not self.lora_targets:
            raise ConfigError("critic.lora_targets: needs at least one module name (or all-linear)")
        if self.val_fold and self.val_fraction <= 0:
            raise ConfigError("critic.val_fold: needs val_fraction > 0")
        if self.val_fold and (self.val_fold + 1) * self.val_fraction > 1 + 1e-9:
            raise ConfigError(f"critic.val_fold: {self.val_fold} is past the last fold "
                              f"({int(round(1 / self.val_fraction)) - 1}) of val_fraction {self.val_fraction}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"critic.test_fraction: val_fraction + test_fraction must be < 1 (got "
                              f"{self.val_fraction} + {self.test_fraction}): no problem left to train on")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]
