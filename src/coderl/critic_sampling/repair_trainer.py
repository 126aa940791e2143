"""The ``train-repair`` stage: the run's executed samples -> a repair model in ``<run>/repair/``.

    summary = train_repair(problems, RunDir(run_dir), RepairConfig(epochs=2))

Pairs (:func:`coderl.critic_sampling.repair.repair_pairs`): each failed program of a train
problem, shown after the task with the sandbox's verdict (the repair prompt critic sampling uses),
and as target a passing program of the same problem (a passing sample first, else a gold program),
written as generation would continue the prompt. The loss, the loop, checkpoints and resume are
the SFT stage's (:class:`coderl.training.sft_trainer.SFTTask` on the shared
:class:`coderl.training.engine.Trainer`); ``<run>/repair/`` is laid out as ``<run>/sft/``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from ..config import fingerprint as config_fingerprint
from ..generation.core import prompt_with_feedback
from ..records import join
from ..rundir import RunDir
from ..training.actor import adapter_base_spec
from ..training.batches import FixedBatches
from ..training.data import (Example, TrainingError, encode_prompt, encode_target, end_of_program,
                             examples_digest, gold_continuation)
from ..training.sft_trainer import SFTTask
from .repair import repair_pairs
from .repair_config import NOT_FINGERPRINTED, RepairConfig


def repair_examples(pairs, tokenizer, is_encoder_decoder: bool, cfg: RepairConfig) -> tuple[list[Example], dict]:
    out, counts = [], Counter()
    for n, (problem, fb, target, info) in enumerate(pairs):
        prompt = prompt_with_feedback(problem, tokenizer, cfg.prompt_style, is_encoder_decoder, fb)
        cont = gold_continuation(problem, prompt, target)
        if cont is None:
            counts["skipped_prefix_mismatch"] += 1
            continue
        end, eos = end_of_program(prompt, is_encoder_decoder)
        out.append(Example(problem.id, info["index"], "gold",
                           encode_prompt(tokenizer, prompt.text, is_encoder_decoder, cfg.max_prompt_tokens),
                           encode_target(tokenizer, cont + end, eos, cfg.max_target_tokens), origin="repair"))
    counts["examples"] = len(out)
    return out, dict(counts)


def train_repair(problems: Sequence, run: RunDir, cfg: RepairConfig, *, progress: bool = True,
                 echo=print, on_step=None) -> dict[str, Any]:
    from ..models import load_model

    if not run.samples.is_file() or not run.results.is_file():
        raise TrainingError(f"coderl train-repair: needs the run's executed samples ({run.samples}, "
                            f"{run.results}); run generate and execute on the train problems first")
    pairs, counts = repair_pairs(problems, join(run.samples, run.results, {p.id for p in problems}),
                                 max_per_problem=cfg.max_pairs, use_samples=cfg.use_samples)
    lm = load_model(run.model(cfg.model))
    examples, enc_counts = repair_examples(pairs, lm.tokenizer, lm.is_encoder_decoder, cfg)
    if not examples:
        raise TrainingError(f"coderl train-repair: no repair pair in {run.samples} ({counts}): it needs "
                            "failed programs of problems with a passing program (a passing sample or "
                            "a gold one)")
    out = run.repair
    info = {"pairs": counts, "train": enc_counts, "target_tokens": sum(len(e.target_ids) for e in examples)}
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED), "data": examples_digest(examples)}
    task = SFTTask(name="train-repair", out=out, cfg=cfg, lm=lm,
                   base_spec=adapter_base_spec(run.model(cfg.model), out), val_examples=[],
                   val_problems=[], data_info=info)
    source = FixedBatches({"ce": examples}, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    return task.train(source, fp, examples, progress=progress, on_step=on_step, echo=echo)


def reads(cfg: RepairConfig) -> tuple[str, ...]:
    return ("samples", "results") + ((cfg.model,) if cfg.model in RunDir.MODELS else ())


def run(problems: Sequence, run: RunDir, cfg: RepairConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's executed samples -> ``run.repair``."""
    return train_repair(list(problems), run, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo)
