"""The ``train-expert`` stage: expert iteration (rejection-sampling fine-tuning), the sampling
model fine-tuned on its own programs that passed, in ``<run>/expert/``.

    summary = train_expert(problems, RunDir(run_dir), ExpertConfig(model="default"))

Each kept program (at most ``max_per_problem`` distinct ones per problem) is trained exactly as
the model wrote it (:func:`~coderl.training.data.build_rl_examples`'s trajectories), with SFT's
loss and model selection; ``<run>/expert/`` is laid out as ``<run>/sft/``. ``prompt_shapes``
``[native, humaneval]`` trains each also in HumanEval's prompt shape, as train-actor does its gold
programs (fine-tuned on MBPP's prompt alone, the model loses HumanEval: RESULTS.md). One round (more: a
recipe that samples again from ``expert``). The cheap baseline every RL claim must beat.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Sequence

from ..execution.codes import PASSED
from ..models import load_model
from ..records import read_samples
from ..rundir import RunDir
from .data import SHAPE_INDEX, TrainingError, build_gold_examples, build_rl_examples
from .expert_config import ExpertConfig
from .options import check_gold_style
from .rewards import coderl_reward
from .sft_trainer import fine_tune


def passing_examples(problems: Sequence, run: RunDir, cfg: ExpertConfig, lm) -> tuple[list, dict[str, Any]]:
    """The run's passing programs of ``cfg.origins`` as examples (distinct, at most
    ``max_per_problem`` per problem; none cut by the token budget: they never stopped), and counts."""
    data = build_rl_examples(problems, run.samples, run.results, lm.tokenizer, lm.is_encoder_decoder,
                             reward=coderl_reward(), origins=tuple(cfg.origins), relative=False,
                             skip_zero_return=False, prompt_style=cfg.prompt_style,
                             max_prompt_tokens=cfg.max_prompt_tokens, max_target_tokens=cfg.max_target_tokens)
    samples = {s.key: s for s in read_samples(run.samples)}
    out, seen, per, counts = [], set(), Counter(), Counter()
    for e in data.examples:
        counts["programs"] += 1
        if e.outcome != PASSED:
            continue
        counts["passed"] += 1
        if getattr(samples.get((e.problem_id, e.index)), "finish", None) == "length":  # cut by max_new_tokens: it did not stop
            counts["skipped_unfinished"] += 1
            continue
        key = (e.problem_id, tuple(e.target_ids))
        if key in seen or (cfg.max_per_problem and per[e.problem_id] >= cfg.max_per_problem):
            counts["skipped_duplicate_or_over_cap"] += 1
            continue
        seen.add(key)
        per[e.problem_id] += 1
        e.kind, e.weights, e.ret = "gold", None, 0.0  # trained as a target, like a gold program
        out.append(e)
    if "humaneval" in cfg.prompt_shapes:
        shaped = humaneval_shaped(problems, out, samples, cfg, lm)
        counts.update(humaneval_examples=len(shaped), humaneval_skipped_shape=len(out) - len(shaped))
        out = (out if "native" in cfg.prompt_shapes else []) + shaped
    counts.update(examples=len(out), problems=len(per))
    return out, dict(counts)


def humaneval_shaped(problems: Sequence, kept: list, samples: dict, cfg: ExpertConfig, lm) -> list:
    """Each kept program also in HumanEval's prompt shape (signature and docstring given), as
    train-actor builds it from a gold program (:func:`~coderl.training.data.humaneval_shape`);
    programs that do not have that shape (code before the function, not an assert problem) are left out."""
    by_id = {p.id: p for p in problems}
    out = []
    for e in kept:
        p = by_id.get(e.problem_id)
        if p is None:
            continue
        program = samples[(e.problem_id, e.index)].program
        shaped, _ = build_gold_examples([dataclasses.replace(p, solutions=[program])], lm.tokenizer,
                                        lm.is_encoder_decoder, prompt_style=cfg.prompt_style,
                                        max_prompt_tokens=cfg.max_prompt_tokens,
                                        max_target_tokens=cfg.max_target_tokens, shapes=("humaneval",))
        for h in shaped:
            h.index, h.origin = SHAPE_INDEX + e.index, "sampled-humaneval"
            out.append(h)
    return out


def train_expert(problems: Sequence, run: RunDir, cfg: ExpertConfig, *, progress: bool = True,
                 echo=print, on_step=None, exec_config: Any = None) -> dict[str, Any]:
    if not run.samples.is_file() or not run.results.is_file():
        raise TrainingError(f"coderl train-expert: needs the run's executed samples ({run.samples}, "
                            f"{run.results}); run generate and execute first")
    spec = run.model(cfg.model)
    lm = load_model(spec)
    examples, counts = passing_examples(problems, run, cfg, lm)
    if not examples:
        raise TrainingError(f"coderl train-expert: no sample of {run.samples} passed its tests ({counts}): "
                            "expert iteration trains only on passing programs (sample more per problem)")
    return fine_tune("train-expert", problems, run.expert, cfg, lm, spec, examples, counts, val_problems=None,
                     progress=progress, on_step=on_step, echo=echo, exec_config=exec_config)


def reads(cfg: ExpertConfig) -> tuple[str, ...]:
    return ("samples", "results") + ((cfg.model,) if cfg.model in RunDir.MODELS else ())


def check(problems: Sequence, run: RunDir, cfg: ExpertConfig, ctx) -> None:
    """Before the box is touched (the stage contract): validation's gold layout is the SFT model's."""
    check_gold_style(cfg, cfg.model, run, key="expert.model")


def run(problems: Sequence, run: RunDir, cfg: ExpertConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's passing samples -> ``run.expert``."""
    return train_expert(list(problems), run, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo,
                        exec_config=ctx.execution)
