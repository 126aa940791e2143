"""The ``train-actor`` stage: the gold programs of the train problems -> a fine-tuned actor in
``<run>/sft/``.
Every gold program becomes one example (:mod:`coderl.training.data`); :class:`SFTTask`'s loss is
the mean negative log-likelihood of the target tokens, the rest ``ActorTask``'s and ``Trainer``'s.

``<run>/sft/`` holds the selected model at its top (a peft adapter, or a Hugging Face checkpoint
with mode full), ``checkpoints/step-NNNNNN/``, ``log.jsonl``, ``tb/``, ``metrics.json``,
``data.jsonl`` (the examples), ``fingerprint.json`` and ``validation/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import fingerprint as config_fingerprint
from ..models import load_model
from ..rundir import RunDir
from . import losses
from .actor import ActorTask, adapter_base_spec, gold_examples, validation_set
from .batches import FixedBatches
from .data import TrainingError, examples_digest
from .sft_config import NOT_FINGERPRINTED, SFTConfig

SFT_DIR = RunDir.SFT  # <run>/sft/


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
    out = RunDir(run_dir).sft
    if fresh and out.exists():
        shutil.rmtree(out)
    lm = load_model(cfg.model)
    examples, counts = gold_examples(problems, cfg, lm, cfg.prompt_shapes)
    if not examples:
        raise TrainingError(f"coderl train-actor: none of the {len(problems)} problems has a gold "
                            f"program to train on ({counts}); train problems need solutions")
    val_problems, val_examples, val_counts = validation_set(problems, cfg, lm, val_problems)
    data_info = {"train": counts, "validation": val_counts,
                 "target_tokens": sum(len(e.target_ids) for e in examples)}
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
          "data": examples_digest(examples), "validation": examples_digest(val_examples)}
    task = SFTTask(name="train-actor", out=out, cfg=cfg, lm=lm, base_spec=adapter_base_spec(cfg.model, out),
                   val_examples=val_examples, val_problems=val_problems, data_info=data_info,
                   exec_config=exec_config)
    source = FixedBatches({"ce": examples}, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    return task.train(source, fp, examples, progress=progress, on_step=on_step, echo=echo)


def run(problems: Sequence, run: RunDir, cfg: SFTConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the problems' gold programs -> ``run.sft``."""
    return train_sft(list(problems), run.root, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo,
                     exec_config=ctx.execution)
