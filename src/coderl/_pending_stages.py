"""TEMPORARY: the stage functions of modules being rewritten right now; they move into
generation/stage.py, training/sft_trainer.py, training/rl_trainer.py, critic/critic_trainer.py."""

from __future__ import annotations

from typing import Any, Sequence

from .rundir import RunDir
from .stage import StageContext


class _Generate:
    @staticmethod
    def reads(cfg) -> tuple[str, ...]:
        return (cfg.model,) if cfg.model in ("sft", "rl") else ()

    @staticmethod
    def fingerprint(problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
        from .generation.stage import fingerprint

        return fingerprint(list(problems), cfg)

    @staticmethod
    def run(problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
        from .generation.stage import generate
        from .models import load_model

        model = None
        if cfg.model in ("sft", "rl"):
            model = load_model(str(run.box(cfg.model)), device=cfg.device, dtype=cfg.dtype, threads=cfg.threads)
        ctx.echo(f"      {len(problems)} problems x ({cfg.num_seqs} sampled{' + 1 greedy' if cfg.greedy else ''})"
                 f" with model {cfg.model!r}")
        summary = generate(list(problems), run.samples, cfg, model=model, selection=ctx.selection,
                           fresh_hint=ctx.fresh_hint)
        if summary.get("tokens"):
            ctx.echo(f"      {summary['sequences']} sequences, {summary['tokens']} tokens, "
                     f"{summary['tokens_per_s']} tok/s")
        return summary


class _TrainActor:
    @staticmethod
    def run(problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
        from .training import train_sft

        return train_sft(list(problems), run.root, cfg, progress=cfg.progress and ctx.progress,
                         echo=ctx.echo, exec_config=ctx.execution)


class _TrainRL:
    @staticmethod
    def reads(cfg) -> tuple[str, ...]:
        return ("samples", "results") + (("critic_scores",) if cfg.critic_weights else ()) + \
            (("sft",) if cfg.init == "sft" else ())

    @staticmethod
    def run(problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
        from .config import ConfigError
        from .training import train_rl

        if cfg.critic_weights and not run.critic_scores.exists():
            raise ConfigError(f"rl.critic_weights: needs {run.critic_scores} (coderl critic-score), or "
                              "set rl.critic_weights: false for q̂ = 1")
        return train_rl(list(problems), run.root, cfg, samples_path=run.samples, results_path=run.results,
                        scores_path=run.critic_scores if cfg.critic_weights else None,
                        progress=cfg.progress and ctx.progress, echo=ctx.echo, exec_config=ctx.execution)


class _TrainCritic:
    @staticmethod
    def run(problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
        from .critic import train_critic

        summary = train_critic(list(problems), run.root, cfg, samples_path=run.samples,
                               results_path=run.results, echo=ctx.echo)
        for part in ("validation", "test"):
            v = summary.get(part) or {}
            if v:
                ctx.echo(f"      {part}: accuracy {v.get('accuracy')}, AUROC {v.get('auroc')}")
        return summary


generate, train_actor, train_rl, train_critic = _Generate, _TrainActor, _TrainRL, _TrainCritic
