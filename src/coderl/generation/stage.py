"""The ``generate`` stage: problems -> samples.jsonl.

For every problem: ``num_seqs`` sampled programs (temperature / top-p) and, with ``greedy``, one
greedy program (``origin=greedy``: CodeRL's baseline W^b for relative returns).

Causal models decode with continuous batching (:func:`coderl.generation.decode.decode_stream`):
up to ``batch_size`` sequences of several problems in flight, left-padded, each ending at its stop
strings, finished ones replaced by new ones. Encoder-decoder models (and causal models with
attention other than full attention, e.g. sliding windows) decode in static batches.
Problem by problem: its greedy program, then its sampled ones (one prompt prefill for all). Each
sample is appended and flushed as it finishes, so a killed run restarts where it stopped: only
the missing (problem, index) pairs are generated again.

Indices: sampled programs are ``0 .. num_seqs-1``, the greedy one is ``num_seqs``.
Seeds: one sampling generator seeded with ``seed`` and a deterministic schedule, so a fresh run
with the same config, model and problems reproduces its samples (a resumed run draws fresh noise
for what was missing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import JsonlAppender
from ..records import sample_writer
from ..models import LoadedModel, build_prompt, extract_program, load_model
from ..models.prompts import Prompt
from ..problems.schema import Problem
from ..config import fingerprint as config_fingerprint
from ..rundir import RunDir, check_resume, write_meta
from .generation_config import NOT_FINGERPRINTED, GenerationConfig
from .decode import Completion, Request, decode_batch, decode_stream, supports_streaming
from .sample import Sample, read_samples


@dataclass
class _Job:
    problem: Problem
    prompt: Prompt
    index: int
    origin: str


def _planned(problem: Problem, cfg: GenerationConfig) -> list[tuple[int, str]]:
    plan = [(i, "sampled") for i in range(cfg.num_seqs)]
    if cfg.greedy:
        plan.append((cfg.num_seqs, "greedy"))
    return plan


class _Progress:
    """tqdm bar over sequences, with generated tokens/s in the postfix (ETA from tqdm)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="seq", desc="generate", disable=not enabled,
                        dynamic_ncols=True)
        self.tokens, self.t0, self.shown = 0, time.time(), 0.0

    def step(self, n_active: int) -> None:
        """One decoding step of ``n_active`` sequences; redraws at most once a second."""
        self.tokens += n_active
        now = time.time()
        if now - self.shown >= 1.0:
            self.shown = now
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9):.1f} tok/s, "
                                     f"{n_active} in flight")

    def done(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def fingerprint(problems: list[Problem], config: GenerationConfig) -> dict:
    """The settings that decide the samples: the generation config (less batch size, threads,
    device, progress) and the problem sources and variants (the prompts)."""
    fp = config_fingerprint(config, exclude=NOT_FINGERPRINTED)
    fp["problem_sources"] = sorted({p.source + (f"/{p.meta['variant']}" if p.meta.get("variant") else "")
                                    for p in problems})
    return fp


def generate(problems: list[Problem], out_path: str | Path, config: GenerationConfig,
             model: LoadedModel | None = None, *, selection: dict | None = None,
             fresh_hint: str = "") -> dict:
    """Generate the samples of ``problems`` into ``out_path`` (resumable under the same settings;
    other settings -> ConfigError). ``selection`` (a ProblemsConfig as a dict) is recorded beside
    the samples. Returns a summary."""
    config.validate()
    out_path = Path(out_path)
    fp = fingerprint(problems, config)
    done: set[tuple[str, int]] = set()
    if check_resume(out_path, "generate", fp, fresh_hint=fresh_hint):
        done = {s.key for s in read_samples(out_path, resume=True)}
    write_meta(out_path, "generate", fp, complete=False, selection=selection)
    jobs_by_problem: dict[str, list[tuple[int, str]]] = {}
    for p in problems:
        todo = [(i, o) for i, o in _planned(p, config) if (p.id, i) not in done]
        if todo:
            jobs_by_problem[p.id] = todo
    total = sum(len(v) for v in jobs_by_problem.values())
    summary = {"problems": len(problems), "skipped_done": len(problems) - len(jobs_by_problem),
               "sequences": total, "tokens": 0, "seconds": 0.0, "path": str(out_path)}
    if not total:
        write_meta(out_path, "generate", fp, complete=True, selection=selection)
        return summary

    lm = model or load_model(config.model, device=config.device, dtype=config.dtype,
                             threads=config.threads)
    if config.threads:
        torch.set_num_threads(config.threads)
    prompts = {p.id: build_prompt(p, lm.tokenizer, config.prompt_style, lm.is_encoder_decoder)
               for p in problems if p.id in jobs_by_problem}
    pending = [p for p in problems if p.id in jobs_by_problem]

    # problem by problem, its greedy baseline first (what RL's relative returns need), then its
    # samples: adjacent requests with one prompt share one prefill
    jobs = [_Job(p, prompts[p.id], i, o) for p in pending
            for i, o in sorted(jobs_by_problem[p.id], key=lambda io: io[1] != "greedy")]
    progress = _Progress(total, config.progress)
    t0 = time.time()
    with sample_writer(out_path) as out:
        writer = _Writer(out, progress)
        if not supports_streaming(lm.model):  # encoder-decoders, sliding-window attention
            _decode_static(lm, jobs, config, writer, progress)
        else:
            requests = [Request(j.prompt.text, j.prompt.stop + list(config.stop),
                                temperature=0.0 if j.origin == "greedy" else config.temperature,
                                top_p=1.0 if j.origin == "greedy" else config.top_p) for j in jobs]
            decode_stream(lm.model, lm.tokenizer, requests, batch_size=config.batch_size,
                          max_new_tokens=config.max_new_tokens,
                          generator=_generator(lm, config.seed),
                          max_prompt_tokens=config.max_prompt_tokens, on_step=progress.step,
                          on_done=lambda i, c: writer.add(jobs[i], c))
    progress.close()
    write_meta(out_path, "generate", fp, complete=True, selection=selection)
    summary["tokens"] = writer.tokens
    summary["seconds"] = round(time.time() - t0, 2)
    summary["tokens_per_s"] = round(summary["tokens"] / max(summary["seconds"], 1e-9), 2)
    return summary


class _Writer:
    """Turns finished sequences into Sample records: extracted program, one flushed line each
    (so a killed run loses only the sequences in flight)."""

    def __init__(self, out: JsonlAppender, progress: _Progress):
        self.out, self.progress, self.tokens = out, progress, 0

    def add(self, j: _Job, c: Completion) -> None:
        self.tokens += c.num_tokens
        self.out.write(Sample(
            problem_id=j.problem.id, index=j.index, origin=j.origin,
            program=extract_program(c.text, j.prompt, j.problem), prompt=j.prompt.text,
            raw=c.text, logprob=round(c.logprob, 4), num_tokens=c.num_tokens,
            finish=c.finish).to_dict())
        self.progress.done(1)


def _decode_static(lm: LoadedModel, jobs: list[_Job], cfg: GenerationConfig, writer: _Writer,
                   progress: _Progress) -> None:
    """Models decode_stream does not serve (encoder-decoders, sliding-window attention): static
    batches of up to ``batch_size`` (finished rows still leave the batch), greedy and sampled
    separately, in windows of a few batches of problems."""
    batch_no = 0
    step = 4 * cfg.batch_size
    for w in range(0, len(jobs), step):
        window = jobs[w:w + step]
        for origin in ("greedy", "sampled"):
            group = sorted((j for j in window if j.origin == origin), key=lambda j: len(j.prompt.text))
            for b in range(0, len(group), cfg.batch_size):
                batch = group[b:b + cfg.batch_size]
                gen = _generator(lm, cfg.seed * 1_000_003 + batch_no)
                batch_no += 1
                completions = decode_batch(
                    lm.model, lm.tokenizer, [j.prompt.text for j in batch],
                    stop=[j.prompt.stop + list(cfg.stop) for j in batch],
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=0.0 if origin == "greedy" else cfg.temperature,
                    top_p=1.0 if origin == "greedy" else cfg.top_p, generator=gen,
                    is_encoder_decoder=lm.is_encoder_decoder, max_prompt_tokens=cfg.max_prompt_tokens,
                    on_step=progress.step)
                for j, c in zip(batch, completions):
                    writer.add(j, c)


def _generator(lm: LoadedModel, seed: int) -> torch.Generator:
    """A seeded generator on the model's device (sampling runs there: a CPU generator cannot
    draw CUDA tensors)."""
    return torch.Generator(device=next(lm.model.parameters()).device).manual_seed(seed)


def reads(cfg: GenerationConfig) -> tuple[str, ...]:
    """The boxes the stage reads (the stage contract, :mod:`coderl.stage`): this run's model when
    ``model`` names one (``sft`` / ``rl``)."""
    return (cfg.model,) if cfg.model in RunDir.MODELS else ()


def stage_fingerprint(problems, run: RunDir, cfg: GenerationConfig, ctx) -> dict:
    return fingerprint(list(problems), cfg)


def run(problems, run: RunDir, cfg: GenerationConfig, ctx) -> dict:
    """The stage contract: the problems -> ``run.samples``, by ``cfg.model`` (``sft``: this run's)."""
    model = None
    if cfg.model in RunDir.MODELS:
        model = load_model(run.model(cfg.model), device=cfg.device, dtype=cfg.dtype, threads=cfg.threads)
    ctx.echo(f"      {len(problems)} problems x ({cfg.num_seqs} sampled{' + 1 greedy' if cfg.greedy else ''}) "
             f"with model {cfg.model!r}")
    summary = generate(list(problems), run.samples, cfg, model=model, selection=ctx.selection,
                       fresh_hint=ctx.fresh_hint)
    if summary.get("tokens"):
        ctx.echo(f"      {summary['sequences']} sequences, {summary['tokens']} tokens, "
                 f"{summary['tokens_per_s']} tok/s")
    return summary
