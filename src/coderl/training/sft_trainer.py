"""The ``train-actor`` stage: the gold programs of the train problems -> a fine-tuned actor in
``<run>/sft/`` (:class:`SFTTask`: the targets' mean negative log-likelihood).

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
    """The actor trained on target programs: their mean negative log-likelihood (+ ``kl_coef`` times
    the exact KL to the starting model at the target positions, where set)."""

    def loss(self, model, kind: str, batch: dict) -> tuple[Any, dict[str, float]]:
        coef = getattr(self.cfg, "kl_coef", 0.0)
        if not coef:
            return losses.sft_loss(losses.token_logprobs(model, batch), batch["target_mask"]), {}
        ref = self.reference_call(model, losses.target_logits, batch)
        ce, kl = losses.nll_and_kl(losses.target_logits(model, batch), ref, batch["targets"], batch["target_mask"])
        return ce + coef * kl, {"ce": float(ce.detach()), "kl": float(kl.detach())}


def train_sft(problems: Sequence, run_dir: str | Path, cfg: SFTConfig, *, progress: bool = True,
              fresh: bool = False, val_problems: Sequence | None = None, exec_config: Any = None,
              on_step: Callable[[int], None] | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on the gold programs of ``problems`` into ``<run_dir>/sft/``."""
    out = RunDir(run_dir).sft
    if fresh and out.exists():
        shutil.rmtree(out)
    lm = load_model(cfg.model)
    examples, counts = gold_examples(problems, cfg, lm, cfg.prompt_shapes)
    if not examples:
        raise TrainingError(f"coderl train-actor: none of the {len(problems)} problems has a gold "
                            f"program to train on ({counts}); train problems need solutions")
    return fine_tune("train-actor", problems, out, cfg, lm, cfg.model, examples, counts, val_problems=val_problems,
                     progress=progress, on_step=on_step, echo=echo, exec_config=exec_config)


def fine_tune(name: str, problems: Sequence, out: Path, cfg, lm, spec: str, examples: list, counts: dict, *,
              val_problems: Sequence | None, progress: bool, on_step, echo, exec_config) -> dict[str, Any]:
    """Train ``lm`` (from ``spec``) on ``examples`` with :class:`SFTTask` into ``out``; the summary."""
    val_problems, val_examples, val_counts = validation_set(problems, cfg, lm, val_problems)
    data_info = {"train": counts, "validation": val_counts, "target_tokens": sum(len(e.target_ids) for e in examples)}
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
          "data": examples_digest(examples), "validation": examples_digest(val_examples)}
    task = SFTTask(name=name, out=out, cfg=cfg, lm=lm, base_spec=adapter_base_spec(spec, out), data_info=data_info,
                   val_examples=val_examples, val_problems=val_problems, exec_config=exec_config,
                   needs_reference=getattr(cfg, "kl_coef", 0.0) > 0)
    source = FixedBatches({"ce": examples}, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    return task.train(source, fp, examples, progress=progress, on_step=on_step, echo=echo)


def run(problems: Sequence, run: RunDir, cfg: SFTConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the problems' gold programs -> ``run.sft``."""
    return train_sft(list(problems), run.root, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo,
                     exec_config=ctx.execution)
