"""The ``train-rl`` stage: CodeRL's offline, critic-weighted policy gradient, as released.

The method is :mod:`coderl.training.objective`; this stage applies it:

1. every sample of the chosen origins with its result gets its reward ``r(W^s)``, the relative
   return ``r(W^s) - r(W^b)`` against its problem's greedy program, and the critic's ``q̂(w_t)``
   carried onto the sampled tokens (:func:`coderl.training.data.build_rl_examples`); the
   trajectory is the sample's own ``prompt`` + ``raw``, exactly what was sampled;
2. RL steps (:meth:`RLTask.loss`) minimise ``L_rl`` (+ ``kl_coef`` x KL to the starting model);
3. one cross-entropy step on the gold programs follows every ``ce_every`` RL steps.

Start (``init``): ``sft`` is this run's SFT model, or any model spec. A LoRA adapter given as init
is merged into its base first, and new adapters train on top; the saved adapter's
``base_model_name_or_path`` is the init (``../sft`` for this run's own), so
``load_model(<run>/rl)`` rebuilds base + SFT + RL. ``<run>/rl/`` holds what ``<run>/sft/`` holds.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import ConfigError, fingerprint as config_fingerprint
from ..models import load_model
from ..rundir import RunDir, read_meta
from . import losses, objective
from .actor import ActorTask, adapter_base_spec, gold_examples, validation_set
from .batches import FixedBatches
from .data import TrainingError, build_rl_examples, examples_digest
from .rewards import Reward, coderl_reward
from .rl_config import NOT_FINGERPRINTED, RLConfig

RL_DIR = RunDir.RL  # <run>/rl/


def resolve_init(init: str, run_dir: str | Path) -> str:
    """The model spec of ``init`` (``sft``: ``<run>/sft/``, which must hold a model)."""
    if init in RunDir.MODELS:
        d = RunDir(run_dir).box(init)
        if not ((d / "adapter_config.json").is_file() or (d / "config.json").is_file()):
            raise TrainingError(f"rl.init {init!r}: no {init.upper()} model in {d} (run the stage that trains it first, "
                                "or set rl.init to a model spec such as default)")
        return str(d.absolute())
    return init


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a).strip().lower() == str(b).strip().lower()


class RLTask(ActorTask):
    """The actor trained with CodeRL's loss (see the module docstring)."""

    def loss(self, model, kind: str, batch: dict) -> tuple[Any, dict[str, float]]:
        """A ``ce`` step: the gold programs' negative log-likelihood. An ``rl`` step: ``L_rl``
        with the batch's relative returns and q̂ weights (+ the KL penalty)."""
        lp = self.logprobs(model, batch)
        mask = batch["target_mask"]
        if kind == "ce":
            return losses.sft_loss(lp, mask), {}
        loss, stats = self.policy_loss(lp, batch)
        if self.cfg.kl_coef > 0 or self.cfg.measure_kl:
            kl = objective.kl_penalty(lp, self.reference_logprobs(model, batch), mask)
            if self.cfg.kl_coef > 0:
                loss = loss + self.cfg.kl_coef * kl
            stats["kl"] = float(kl.detach())
        return loss, stats

    def policy_loss(self, lp, batch: dict) -> tuple[Any, dict[str, float]]:
        """``L_rl`` of a batch's log-probabilities ``lp`` with its returns and q̂ weights."""
        mask, returns, q_hat = batch["target_mask"], batch["returns"], batch["weights"]
        return objective.rl_loss(lp, mask, returns, q_hat), {
            "return": float(returns.mean()), "q_hat": float((q_hat * mask).sum() / mask.sum().clamp(min=1))}


def train_rl(problems: Sequence, run_dir: str | Path, cfg: RLConfig, *, samples_path: str | Path,
             results_path: str | Path, scores_path: str | Path | None = None, progress: bool = True,
             fresh: bool = False, reward: Reward | None = None, val_problems: Sequence | None = None,
             on_step: Callable[[int], None] | None = None, echo: Callable[[str], None] = print,
             exec_config: Any = None) -> dict[str, Any]:
    """Train the actor with CodeRL's loss into ``<run_dir>/rl/`` (see the module docstring);
    returns the summary (also in ``rl/metrics.json``). ``reward``: a callable ``(problem,
    program, result) -> float`` (default: CodeRL's table, RLTF partial credit with
    ``cfg.partial_credit``); ``scores_path`` None (or ``critic_weights=false``): q̂ = 1."""
    out = RunDir(run_dir).rl
    if fresh and out.exists():
        shutil.rmtree(out)
    init = resolve_init(cfg.init, run_dir)
    warnings: list[str] = []
    meta = read_meta(samples_path) or {}
    sampled_by = (meta.get("fingerprint") or {}).get("model")
    if sampled_by in RunDir.MODELS:  # generation.model: sft (the run's own model, by its alias)
        sampled_by = str(RunDir(run_dir).box(sampled_by).absolute())
    if sampled_by is not None and not _same_model(str(sampled_by), init):
        warnings.append(f"{samples_path} was generated by model {sampled_by!r}, but RL starts from "
                        f"{init!r}: the paper trains on the starting model's own samples")
    for w in warnings:
        echo(f"coderl train-rl: warning: {w}")
    lm = load_model(init)
    scores, phash = None, None
    if cfg.critic_weights and scores_path is not None:
        from ..critic.scores import program_hash, read_scores

        scores, phash = read_scores(scores_path), program_hash
    elif cfg.critic_weights:
        warnings.append("no critic scores given: q̂ = 1 for every token")
        echo("coderl train-rl: warning: no critic scores given: q̂ = 1 for every token")
    rl = build_rl_examples(problems, samples_path, results_path, lm.tokenizer, lm.is_encoder_decoder,
                           reward=reward or coderl_reward(cfg.partial_credit), scores=scores,
                           origins=cfg.origins, relative=cfg.relative_return,
                           skip_zero_return=cfg.skip_zero_return, prompt_style=cfg.prompt_style,
                           max_prompt_tokens=cfg.max_prompt_tokens,
                           max_target_tokens=cfg.max_target_tokens, program_hash=phash)
    if not rl.examples:
        raise TrainingError(f"coderl train-rl: no sample to train on in {samples_path} ({rl.stats}): "
                            "every return is 0 (each sample's reward equals its greedy baseline's) "
                            "or no sample has an origin in rl.origins")
    gold, gold_counts = gold_examples(problems, cfg, lm) if cfg.ce_every else ([], {})
    if cfg.ce_every and not gold:
        raise ConfigError(f"rl.ce_every: {cfg.ce_every} cross-entropy steps need gold programs, and "
                          "none of the train problems has one (set ce_every: 0)")
    val_problems, val_examples, val_counts = validation_set(problems, cfg, lm, val_problems)
    data_info = {"rl": rl.stats, "gold": gold_counts, "validation": val_counts, "init": init,
                 "warnings": warnings}
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
          "init": cfg.init if cfg.init in RunDir.MODELS else init,  # the run's own sft/: relocatable
          "data": examples_digest(rl.examples), "gold": examples_digest(gold),
          "validation": examples_digest(val_examples)}
    task = RLTask(name="train-rl", out=out, cfg=cfg, lm=lm, base_spec=adapter_base_spec(init, out),
                  val_examples=val_examples, val_problems=val_problems, data_info=data_info,
                  needs_reference=cfg.kl_coef > 0 or cfg.measure_kl, exec_config=exec_config)
    streams = {"rl": rl.examples, **({"ce": gold} if gold else {})}
    source = FixedBatches(streams, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                          kinds=partial(objective.schedule, ce_every=cfg.ce_every))
    return task.train(source, fp, rl.examples, progress=progress, on_step=on_step, echo=echo)


def reads(cfg: RLConfig) -> tuple[str, ...]:
    """The boxes the stage reads under ``cfg`` (the stage contract, :mod:`coderl.stage`)."""
    return ("samples", "results") + (("critic_scores",) if cfg.critic_weights else ()) + \
        ((cfg.init,) if cfg.init in RunDir.MODELS else ())


def run(problems: Sequence, run: RunDir, cfg: RLConfig, ctx) -> dict[str, Any]:
    """The stage contract: the run's samples, results and critic scores -> ``run.rl``."""
    if cfg.critic_weights and not run.critic_scores.exists():
        raise ConfigError(f"rl.critic_weights: needs {run.critic_scores} (coderl critic-score), or set "
                          "rl.critic_weights: false for q̂ = 1")
    return train_rl(list(problems), run.root, cfg, samples_path=run.samples, results_path=run.results,
                    scores_path=run.critic_scores if cfg.critic_weights else None,
                    progress=cfg.progress and ctx.progress, echo=ctx.echo, exec_config=ctx.execution)
