"""The ``train-actor`` stage's config (beside ``sft_trainer.py``): every option of
``coderl train-actor`` and of the pipeline's ``sft`` section."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import opt
from .base_config import NOT_FINGERPRINTED, TrainerConfig
from .options import check_prompt_shapes, gold_style_option, prompt_shapes_option

__all__ = ["SFTConfig", "NOT_FINGERPRINTED"]


@dataclass
class SFTConfig(TrainerConfig):
    """Supervised warm-up on the gold programs of the train problems (loss on program tokens)."""

    SECTION = "sft"
    ADDED_SETTINGS = ("prompt_shapes", "gold_style", "kl_coef")  # at its default, absent from fingerprints (older boxes resume)

    model: str = opt("default", "Model to fine-tune: default (SmolLM2-135M-Instruct), a local "
                     "Hugging Face directory (causal LM or T5/CodeT5), a LoRA adapter directory "
                     "(merged first) or a .gguf file.")
    max_solutions: int = opt(0, "Gold programs per problem (0: all; APPS problems have dozens).", ge=0)
    gold_reorder: bool = opt(True, "Chat prompts pre-fill `def <entry_point>(`: a gold program with "
                             "code before that function (imports, helpers) is trained with that "
                             "code moved after it (the same program at call time); off: such "
                             "programs are skipped.")

    prompt_shapes: list[str] = prompt_shapes_option(
        "Prompt shapes each gold program is trained in: native (the problem's own prompt) and humaneval "
        "(its signature and a docstring given, the function to write: HumanEval's shape).")

    gold_style: str = gold_style_option(
        "Layout of the gold programs trained on: raw (as the dataset writes them: MBPP's mix tabs, 2- and "
        "8-space indents, `if (x) :`) or normalized (ast.unparse's: 4 spaces, no redundant parentheses, no "
        "comments; the same programs), so the model does not learn the dataset's layout.")

    kl_coef: float = opt(0.0, "Weight of the exact KL (whole vocabulary, at the target positions) from the "
                         "trained model to the starting one, added to the loss: an anchor against "
                         "losing what the model could do (LoRA: the adapters off; full: a frozen copy, "
                         "twice the memory). 0: plain SFT.", ge=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_prompt_shapes(self.SECTION, self.prompt_shapes)
