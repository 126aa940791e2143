"""The ``train-rl`` stage: CodeRL's offline, critic-weighted policy gradient, as released
(the method: :mod:`coderl.training.objective`):

1. every sample of the chosen origins gets its reward, its return against its problem's greedy
   program and the critic's ``q̂(w_t)`` per sampled token (:func:`~coderl.training.data.build_rl_examples`);
   the trajectory is exactly what was sampled (the sample's ``prompt`` + ``raw``);
2. RL steps minimise ``L_rl`` (+ ``kl_coef`` x KL to the starting model);
3. one cross-entropy step on the gold programs follows every ``ce_every`` RL steps.

``init``: ``sft`` (this run's SFT model) or any model spec. A LoRA adapter given as init is merged
into its base and new adapters train on top; their ``base_model_name_or_path`` is the init
(``../sft`` for this run's own), so ``load_model(<run>/rl)`` rebuilds base + SFT + RL.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import ConfigError, fingerprint as config_fingerprint
from ..models import load_model
from ..rundir import RunDir, read_meta
from . import losses, objective, shared_prefix
from .actor import ActorTask, adapter_base_spec, gold_examples, validation_set
from .batches import FixedBatches
from .data import TrainingError, build_rl_examples, examples_digest
from .rewards import Reward, coderl_reward
from .options import check_gold_style
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
    """The actor trained with CodeRL's loss (see the module docstring). A causal LM's RL
    micro-batch runs each distinct prompt once (:mod:`.shared_prefix`; ``rl.share_prompts``)."""

    def collate(self, kind: str, items: list) -> dict[str, Any]:
        batch = super().collate(kind, items)
        # gradient checkpointing: transformers drops the prompt's cache the sharing needs
        if kind == "rl" and getattr(self.cfg, "share_prompts", True) and not self.lm.is_encoder_decoder \
                and not self.cfg.gradient_checkpointing:
            groups = shared_prefix.prompt_groups(items)
            if len(groups) < len(items):
                batch["prompt_groups"] = groups
        return batch

    def num_tokens(self, batch: dict[str, Any]) -> int:
        if "prompt_groups" not in batch:
            return super().num_tokens(batch)
        return sum(len(p) for p, _ in batch["prompt_groups"]) + int(batch["target_mask"].sum())

    def logprobs(self, model, batch: dict):
        if "prompt_groups" not in batch:
            return super().logprobs(model, batch)
        return shared_prefix.batch_logprobs(model, batch)

    def loss(self, model, kind: str, batch: dict) -> tuple[Any, dict[str, float]]:
        """``ce`` steps: the gold programs' NLL; ``rl`` steps: ``L_rl`` (+ the KL penalty)."""
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
    """Train the actor with CodeRL's loss into ``<run_dir>/rl/``; the summary. ``reward``: default
    CodeRL's table (RLTF's with ``partial_credit``); no ``scores_path``: q̂ = 1."""
    out = RunDir(run_dir).rl
    if fresh and out.exists():
        shutil.rmtree(out)
    init = resolve_init(cfg.init, run_dir)
    warnings: list[str] = []
    sampled_by = ((read_meta(samples_path) or {}).get("fingerprint") or {}).get("model")
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
                           skip_zero_return=cfg.skip_zero_return, baseline_kind=cfg.baseline,
                           prompt_style=cfg.prompt_style,
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
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(rl.examples):
        groups.setdefault(e.problem_id, []).append(i)
    source = FixedBatches(streams, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                          kinds=partial(objective.schedule, ce_every=cfg.ce_every),
                          groups={"rl": list(groups.values())} if cfg.share_prompts else None)
    return task.train(source, fp, rl.examples, progress=progress, on_step=on_step, echo=echo)


def reads(cfg: RLConfig) -> tuple[str, ...]:
    """The boxes the stage reads under ``cfg`` (the stage contract, :mod:`coderl.stage`)."""
    return ("samples", "results") + (("critic_scores",) if cfg.critic_weights else ()) + \
        ((cfg.init,) if cfg.init in RunDir.MODELS else ())


def check(problems: Sequence, run: RunDir, cfg: RLConfig, ctx) -> None:
    """Before the box is touched (the stage contract): the gold layout is the starting SFT model's."""
    check_gold_style(cfg, cfg.init, run, key="rl.init")


def run(problems: Sequence, run: RunDir, cfg: RLConfig, ctx) -> dict[str, Any]:
    """The stage contract: the run's samples, results and critic scores -> ``run.rl``."""
    if cfg.critic_weights and not run.critic_scores.exists():
        raise ConfigError(f"rl.critic_weights: needs {run.critic_scores} (coderl critic-score), or set "
                          "rl.critic_weights: false for q̂ = 1")
    return train_rl(list(problems), run.root, cfg, samples_path=run.samples, results_path=run.results,
                    scores_path=run.critic_scores if cfg.critic_weights else None,
                    progress=cfg.progress and ctx.progress, echo=ctx.echo, exec_config=ctx.execution)
