"""Generation in memory: requests in, ``Sample`` records out (what rounds of critic sampling and
online RL call; the ``generate`` stage is a file writer around it).

    lm = load_model("default")
    reqs = [GenRequest(p, i) for p in problems for i in range(4)]          # fresh programs
    reqs += [GenRequest(p, 10, prefix=sample.raw[:cut], meta={"parent": 3})]  # continue a prefix
    samples = generate_samples(lm, reqs, GenerationConfig(temperature=0.8))

A request with a ``prefix`` (the start of a program, as the model wrote it) decodes from the
problem's prompt followed by that prefix: the two are prefilled together once, and the
continuations of one prefix share that prefill (adjacent requests with the same text share one
prompt forward in :func:`~coderl.generation.decode.decode_stream`). The Sample's ``raw`` is
prefix + continuation and its ``program`` is extracted from that, as for any sample; its
``num_tokens`` and ``logprob`` count the continuation only; stop strings are looked for in the
continuation only; ``meta["prefix_chars"]`` records the prefix's length.

Greedy requests (``origin="greedy"``) decode with temperature 0, the others with the config's
temperature and top-p. Causal models decode with continuous batching, encoder-decoders (and
sliding-window attention) in static batches. One sampling generator seeded with ``cfg.seed`` and
a deterministic schedule: the same requests, config and model give the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..models import LoadedModel, build_prompt, extract_program
from ..models.prompts import Prompt
from ..problems.schema import Problem
from ..records import ORIGINS, Sample
from .decode import Completion, Request, decode_batch, decode_stream, supports_streaming
from .generation_config import GenerationConfig


@dataclass
class GenRequest:
    """One program to generate for ``problem``: its index in the problem's samples, its origin,
    optionally the start of the program to continue, and what to record in ``Sample.meta``."""

    problem: Problem
    index: int
    origin: str = "sampled"
    prefix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"{self.problem.id}: a request's index must be >= 0, got {self.index}")
        if self.origin not in ORIGINS or self.origin == "gold":
            raise ValueError(f"{self.problem.id}: origin {self.origin!r} is not a generated origin "
                             f"({', '.join(o for o in ORIGINS if o != 'gold')})")


class _Job:
    """A request with its prompt: the decoder's view of it."""

    def __init__(self, req: GenRequest, prompt: Prompt):
        self.req, self.prompt = req, prompt
        self.text = prompt.text + req.prefix


def generate_samples(lm: LoadedModel, requests: Sequence[GenRequest], cfg: GenerationConfig, *,
                     on_sample: Callable[[Sample], None] | None = None,
                     on_step: Callable[[int], None] | None = None) -> list[Sample]:
    """Decode ``requests`` with ``lm`` (see the module docstring); ``on_sample(sample)`` is called
    as each finishes (in finishing order), ``on_step(n_active)`` after every decoding step.
    Returns the samples in request order."""
    prompts: dict[str, Prompt] = {}
    jobs = []
    for r in requests:
        if r.problem.id not in prompts:
            prompts[r.problem.id] = build_prompt(r.problem, lm.tokenizer, cfg.prompt_style, lm.is_encoder_decoder)
        jobs.append(_Job(r, prompts[r.problem.id]))
    out: list[Sample | None] = [None] * len(jobs)

    def done(i: int, c: Completion) -> None:
        out[i] = _sample(jobs[i], c)
        if on_sample is not None:
            on_sample(out[i])

    if not jobs:
        return []
    if supports_streaming(lm.model):
        _check_prefix_length(lm, jobs, cfg)
        reqs = [Request(j.text, j.prompt.stop + list(cfg.stop),
                        temperature=0.0 if j.req.origin == "greedy" else cfg.temperature,
                        top_p=1.0 if j.req.origin == "greedy" else cfg.top_p) for j in jobs]
        decode_stream(lm.model, lm.tokenizer, reqs, batch_size=cfg.batch_size,
                      max_new_tokens=cfg.max_new_tokens, generator=generator(lm, cfg.seed),
                      max_prompt_tokens=cfg.max_prompt_tokens, on_step=on_step, on_done=done)
    else:
        _decode_static(lm, jobs, cfg, done, on_step)
    return out  # type: ignore[return-value]


def _sample(j: _Job, c: Completion) -> Sample:
    r = j.req
    raw = r.prefix + c.text
    meta = dict(r.meta)
    if r.prefix:
        meta["prefix_chars"] = len(r.prefix)
    return Sample(problem_id=r.problem.id, index=r.index, origin=r.origin,
                  program=extract_program(raw, j.prompt, r.problem), prompt=j.prompt.text, raw=raw,
                  logprob=round(c.logprob, 4), num_tokens=c.num_tokens, finish=c.finish, meta=meta)


def _check_prefix_length(lm: LoadedModel, jobs: list[_Job], cfg: GenerationConfig) -> None:
    """A prefix must fit in ``max_prompt_tokens`` with its prompt: decode_stream would cut the
    text from the right and continue something else than the prefix."""
    for j in jobs:
        if j.req.prefix and len(lm.tokenizer.encode(j.text, add_special_tokens=False)) > cfg.max_prompt_tokens:
            raise ValueError(f"{j.req.problem.id} (index {j.req.index}): prompt + prefix are longer than "
                             f"max_prompt_tokens ({cfg.max_prompt_tokens}); raise it or cut the prefix")


def _decode_static(lm: LoadedModel, jobs: list[_Job], cfg: GenerationConfig,
                   done: Callable[[int, Completion], None], on_step) -> None:
    """Models decode_stream does not serve (encoder-decoders, sliding-window attention): static
    batches of up to ``batch_size`` (finished rows still leave the batch), greedy and sampled
    separately, in windows of a few batches of problems."""
    batch_no = 0
    step = 4 * cfg.batch_size
    for w in range(0, len(jobs), step):
        window = list(range(w, min(w + step, len(jobs))))
        for greedy in (True, False):
            group = sorted((i for i in window if (jobs[i].req.origin == "greedy") == greedy),
                           key=lambda i: len(jobs[i].text))
            for b in range(0, len(group), cfg.batch_size):
                batch = group[b:b + cfg.batch_size]
                gen = generator(lm, cfg.seed * 1_000_003 + batch_no)
                batch_no += 1
                completions = decode_batch(
                    lm.model, lm.tokenizer, [jobs[i].text for i in batch],
                    stop=[jobs[i].prompt.stop + list(cfg.stop) for i in batch],
                    max_new_tokens=cfg.max_new_tokens, temperature=0.0 if greedy else cfg.temperature,
                    top_p=1.0 if greedy else cfg.top_p, generator=gen,
                    is_encoder_decoder=lm.is_encoder_decoder, max_prompt_tokens=cfg.max_prompt_tokens,
                    on_step=on_step)
                for i, c in zip(batch, completions):
                    done(i, c)


def generator(lm: LoadedModel, seed: int) -> torch.Generator:
    """A seeded generator on the model's device (sampling runs there: a CPU generator cannot
    draw CUDA tensors)."""
    return torch.Generator(device=next(lm.model.parameters()).device).manual_seed(seed)
