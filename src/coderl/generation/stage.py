"""The ``generate`` stage: problems -> samples.jsonl.

For every problem: ``num_seqs`` sampled programs (indices ``0 .. num_seqs-1``) and, with
``greedy``, one greedy program (``origin=greedy``, index ``num_seqs``: CodeRL's baseline W^b).
:func:`coderl.generation.core.generate_samples` decodes them; this module plans, resumes and
writes. Each sample is appended and flushed as it finishes, so a killed run regenerates only the
missing (problem, index) pairs, each from its own seed: the same samples as an uninterrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..records import Sample, read_samples, sample_writer
from ..models import LoadedModel, load_model
from ..problems.schema import Problem
from ..config import fingerprint as config_fingerprint
from ..rundir import RunDir, check_resume, write_meta
from .generation_config import NOT_FINGERPRINTED, GenerationConfig
from .core import GenRequest, generate_samples


class _Progress:
    """tqdm bar over sequences, with generated tokens/s in the postfix (ETA from tqdm)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="seq", desc="generate", disable=not enabled, dynamic_ncols=True)
        self.tokens, self.t0, self.shown = 0, time.time(), 0.0

    def step(self, n_active: int) -> None:
        """One decoding step of ``n_active`` sequences; redraws at most once a second."""
        self.tokens += n_active
        now = time.time()
        if now - self.shown >= 1.0:
            self.shown = now
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9):.1f} tok/s, {n_active} in flight")


def fingerprint(problems: list[Problem], config: GenerationConfig) -> dict:
    """The settings that decide the samples: the generation config (less batch size, threads,
    device, progress) and the problem sources and variants (the prompts)."""
    fp = config_fingerprint(config, exclude=NOT_FINGERPRINTED)
    fp["problem_sources"] = sorted({p.source + (f"/{p.meta['variant']}" if p.meta.get("variant") else "")
                                    for p in problems})
    return fp


def generate(problems: list[Problem], out_path: str | Path, config: GenerationConfig,
             model: LoadedModel | str | None = None, *, selection: dict | None = None, fresh_hint: str = "") -> dict:
    """Generate the samples of ``problems`` into ``out_path`` (resumable under the same settings;
    other settings -> ConfigError) with ``model`` (loaded, a spec, or None: ``config.model``), here
    or on Ray (``config.backend``). ``selection`` (a ProblemsConfig as a dict) is recorded beside
    the samples. Returns a summary."""
    out_path = Path(out_path)
    fp = fingerprint(problems, config)
    done: set[tuple[str, int]] = set()
    if check_resume(out_path, "generate", fp, fresh_hint=fresh_hint):
        done = {s.key for s in read_samples(out_path, resume=True)}
    write_meta(out_path, "generate", fp, complete=False, selection=selection)
    # problem by problem, its greedy baseline first (what RL's relative returns need), then its
    # samples: adjacent requests with one prompt share one prefill
    plan = [(config.num_seqs, "greedy")] if config.greedy else []
    plan += [(i, "sampled") for i in range(config.num_seqs)]
    requests = [GenRequest(p, i, o) for p in problems for i, o in plan if (p.id, i) not in done]
    total = len(requests)
    summary = {"problems": len(problems), "skipped_done": len(problems) - len({r.problem.id for r in requests}),
               "sequences": total, "tokens": 0, "seconds": 0.0, "path": str(out_path)}
    if not total:
        write_meta(out_path, "generate", fp, complete=True, selection=selection)
        return summary
    progress = _Progress(total, config.progress)
    t0 = time.time()
    tokens = 0
    with sample_writer(out_path) as out:
        def write(sample: Sample) -> None:
            nonlocal tokens
            tokens += sample.num_tokens
            out.write(sample.to_dict())
            progress.bar.update(1)

        if config.backend == "ray":
            from ..distributed.ray_generator import RayGenerator

            spec = model.spec if isinstance(model, LoadedModel) else model if isinstance(model, str) else config.model
            with RayGenerator(spec, actors=config.ray_actors, address=config.ray_address, device=config.device,
                              dtype=config.dtype, threads=config.threads) as ray_gen:
                ray_gen.generate(requests, config, on_sample=write)
                summary["backend"] = ray_gen.backend_info()
        else:
            lm = model if isinstance(model, LoadedModel) else load_model(
                model or config.model, device=config.device, dtype=config.dtype, threads=config.threads)
            if config.threads:
                torch.set_num_threads(config.threads)
            generate_samples(lm, requests, config, on_sample=write, on_step=progress.step)
    progress.bar.close()
    write_meta(out_path, "generate", fp, complete=True, selection=selection)
    summary.update(tokens=tokens, seconds=round(time.time() - t0, 2))
    summary["tokens_per_s"] = round(tokens / max(summary["seconds"], 1e-9), 2)
    return summary


def reads(cfg: GenerationConfig) -> tuple[str, ...]:
    """The boxes the stage reads (the stage contract, :mod:`coderl.stage`): this run's model when
    ``model`` names one (``sft`` / ``rl``)."""
    return (cfg.model,) if cfg.model in RunDir.MODELS else ()


def stage_fingerprint(problems, run: RunDir, cfg: GenerationConfig, ctx) -> dict:
    return fingerprint(list(problems), cfg)


def run(problems, run: RunDir, cfg: GenerationConfig, ctx) -> dict:
    """The stage contract: the problems -> ``run.samples``, by ``cfg.model`` (``sft``: this run's)."""
    model = str(run.model(cfg.model)) if cfg.model in RunDir.MODELS else None
    ctx.echo(f"      {len(problems)} problems x ({cfg.num_seqs} sampled{' + 1 greedy' if cfg.greedy else ''}) "
             f"with model {cfg.model!r}")
    summary = generate(list(problems), run.samples, cfg, model=model, selection=ctx.selection,
                       fresh_hint=ctx.fresh_hint.replace("{stage}", "generate"))
    if summary.get("tokens"):
        ctx.echo(f"      {summary['sequences']} sequences, {summary['tokens']} tokens, {summary['tokens_per_s']} tok/s")
    return summary
