"""The ``train-actor`` stage: the gold programs of the train problems -> a fine-tuned actor in
``<run>/sft/``.

    summary = train_sft(problems, run_dir, SFTConfig(epochs=2))
    lm = load_model(str(run_dir / "sft"))      # the selected model (best validation loss)

Every gold program (``problem.solutions``) becomes one example: the prompt generation would
build for the problem (same style, same tokenization), and as target the program's continuation
after the prompt's pre-filled prefix plus what ends it (the closing fence, ``[DONE]`` or the end
token; :mod:`coderl.training.data`). The loss is the mean negative log-likelihood of the target
tokens only (:func:`coderl.training.losses.sft_loss`): :class:`SFTTask`'s loss step. The model,
validation and saved models are :class:`coderl.training.actor.ActorTask`'s; the loop,
checkpoints, resume and the NaN guard :class:`coderl.training.engine.Trainer`'s, on the gold
examples in a seeded order (:class:`coderl.training.batches.FixedBatches`).

``<run>/sft/`` holds: the selected model at its top (a peft adapter whose
``base_model_name_or_path`` is the model spec, or a Hugging Face checkpoint with mode full),
``checkpoints/step-NNNNNN/`` (resumable), ``log.jsonl``, ``tb/``, ``metrics.json``,
``data.jsonl`` (the examples: problem, tokens), ``fingerprint.json``, ``validation/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import fingerprint as config_fingerprint
from ..models import load_model
from ..rundir import RunDir
from . import losses
from .actor import ActorTask, adapter_base_spec, load_validation_problems
from .batches import FixedBatches
from .data import TrainingError, build_gold_examples, examples_digest
from .engine import LoopSettings, Trainer
from .sft_config import NOT_FINGERPRINTED, SFTConfig

SFT_DIR = RunDir.SFT  # <run>/sft/


def sft_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).sft


class SFTTask(ActorTask):
    """The actor trained on gold programs: the loss step is the targets' mean negative
    log-likelihood."""

    def loss(self, model, kind: str, batch: dict) -> tuple[Any, dict[str, float]]:
        lp = losses.token_logprobs(model, batch)
        return losses.sft_loss(lp, batch["target_mask"]), {}


def train_sft(problems: Sequence, run_dir: str | Path, cfg: SFTConfig, *, progress: bool = True,
              fresh: bool = False, val_problems: Sequence | None = None,
              on_step: Callable[[int], None] | None = None, echo: Callable[[str], None] = print,
              exec_config: Any = None) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on the gold programs of ``problems`` into ``<run_dir>/sft/`` (see
    the module docstring); returns the summary (also in ``sft/metrics.json``).

    ``val_problems`` overrides the config's validation problems; ``on_step(step)`` is called
    after every optimizer step (tests interrupt training there); ``exec_config`` is the
    execution config of the optional pass@1 check."""
    out = sft_dir(run_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    lm = load_model(cfg.model)
    tok, encdec = lm.tokenizer, lm.is_encoder_decoder
    kw = dict(prompt_style=cfg.prompt_style, max_prompt_tokens=cfg.max_prompt_tokens,
              max_target_tokens=cfg.max_target_tokens, max_solutions=cfg.max_solutions,
              reorder=cfg.gold_reorder)
    examples, counts = build_gold_examples(problems, tok, encdec, **kw)
    if not examples:
        raise TrainingError(f"coderl train-actor: none of the {len(problems)} problems has a gold "
                            f"program to train on ({counts}); train problems need solutions")
    train_ids = {p.id for p in problems}
    if val_problems is None:
        val_problems = load_validation_problems(cfg, train_ids)
    val_problems = [p for p in val_problems if p.id not in train_ids]
    val_examples, val_counts = build_gold_examples(val_problems, tok, encdec, **kw)
    data_info = {"train": counts, "validation": val_counts,
                 "target_tokens": sum(len(e.target_ids) for e in examples)}
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
          "data": examples_digest(examples), "validation": examples_digest(val_examples)}
    task = SFTTask(name="train-actor", out=out, cfg=cfg, lm=lm, base_spec=adapter_base_spec(cfg.model, out),
                   val_examples=val_examples, val_problems=val_problems, data_info=data_info,
                   exec_config=exec_config)
    source = FixedBatches({"ce": examples}, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    return Trainer(task, source, LoopSettings.of(cfg, cfg.SECTION, progress=progress and cfg.progress),
                   out=out, fingerprint=fp, data_records=[e.summary() for e in examples], on_step=on_step,
                   echo=echo).run()


def run(problems: Sequence, run: RunDir, cfg: SFTConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the problems' gold programs -> ``run.sft``."""
    return train_sft(list(problems), run.root, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo,
                     exec_config=ctx.execution)
