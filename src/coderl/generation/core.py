"""Generation in memory: requests in, ``Sample`` records out (what rounds of critic sampling and
online RL call; the ``generate`` stage is a file writer around it).

A request with a ``prefix`` (the start of a program, as the model wrote it) continues it
(:mod:`coderl.generation.decode`: prompt + prefix read as one text; adjacent or recent requests
share its prefill). The Sample's ``raw`` is prefix + continuation, its ``program`` extracted from
that; ``num_tokens`` and ``logprob`` count the continuation only; ``meta`` is the request's, plus
``prefix_chars`` (the prefix's length). A causal model's prompt is never truncated before a
prefix: a prompt longer than ``max_prompt_tokens`` with a prefix is a :class:`RequestError`.

Sampling settings: :meth:`GenRequest.sampling` (greedy requests: temperature 0). Causal models
decode with continuous batching, in request order; others in static batches (:func:`_decode_static`).
Each request draws its own noise from (``cfg.seed``, its problem, its index) (:func:`request_seed`):
a sample depends on the model, the prompt and that seed only, not on the batch size, the other
requests, their order, the process (a Ray actor or this one) or a resume (up to floating-point
rounding, see :mod:`coderl.generation.decode`). Give each round of a loop its own ``cfg.seed``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..models import LoadedModel, build_prompt, extract_program
from ..models.prompts import Prompt, chat_prompt
from ..problems.schema import Problem
from ..records import ORIGINS, Sample
from .decode import Completion, Request, decode_batch, decode_stream, supports_streaming
from .generation_config import GenerationConfig


class RequestError(ValueError):
    """A generation request that cannot be served; the message names the request."""


@dataclass
class GenRequest:
    """One program to generate for ``problem``: its index in the problem's samples, its origin,
    optionally the start of the program to continue, what to record in ``Sample.meta``, and
    sampling settings of its own (None: the origin's, see the module docstring)."""

    problem: Problem
    index: int
    origin: str = "sampled"
    prefix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    feedback: str | None = None  # text the prompt adds after the task (repair: a program, its error)
    seed: int | None = None      # its noise; None: request_seed(cfg.seed, problem, index)

    def __post_init__(self) -> None:
        where = f"generation request for {self.problem.id!r}"
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise RequestError(f"{where}: index must be an int >= 0, got {self.index!r}")
        if self.origin not in ORIGINS or self.origin == "gold":
            raise RequestError(f"{where} (index {self.index}): origin {self.origin!r} is not a "
                               f"generated origin ({', '.join(o for o in ORIGINS if o != 'gold')})")
        if self.temperature is not None and not self.temperature >= 0:
            raise RequestError(f"{where} (index {self.index}): temperature must be >= 0, got {self.temperature!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise RequestError(f"{where} (index {self.index}): top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem.id, self.index)

    @property
    def prompt_key(self) -> tuple[str, str | None]:
        return (self.problem.id, self.feedback)

    def sampling(self, cfg: GenerationConfig) -> tuple[float, float]:
        """(temperature, top_p) this request decodes with."""
        t, p = (0.0, 1.0) if self.origin == "greedy" else (cfg.temperature, cfg.top_p)
        return (t if self.temperature is None else self.temperature, p if self.top_p is None else self.top_p)


def request_seed(seed: int, problem_id: str, index: int) -> int:
    """The noise seed of sample ``index`` of ``problem_id`` in a run seeded ``seed`` (63 bits)."""
    digest = hashlib.sha256(f"{seed}\x00{problem_id}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generate_samples(lm: LoadedModel, requests: Sequence[GenRequest], cfg: GenerationConfig, *,
                     on_sample: Callable[[Sample], None] | None = None,
                     on_step: Callable[[int], None] | None = None) -> list[Sample]:
    """Decode ``requests`` with ``lm`` (see the module docstring); ``on_sample(sample)`` is called
    as each finishes (in finishing order), ``on_step(n_active)`` after every decoding step.
    Returns the samples in request order. Raises :class:`RequestError` before decoding anything
    when two requests share a (problem, index) or a prefix follows a prompt too long to keep."""
    prompts = {}
    for r in requests:
        if r.prompt_key not in prompts:
            prompts[r.prompt_key] = prompt_with_feedback(r.problem, lm.tokenizer, cfg.prompt_style,
                                                         lm.is_encoder_decoder, r.feedback)
    _check(lm, requests, prompts, cfg)
    out = [None] * len(requests)

    def done(i: int, c: Completion) -> None:
        r = requests[i]
        prompt, raw, meta = prompts[r.prompt_key], r.prefix + c.text, dict(r.meta)
        if r.prefix:
            meta["prefix_chars"] = len(r.prefix)
        out[i] = Sample(problem_id=r.problem.id, index=r.index, origin=r.origin,
                        program=extract_program(raw, prompt, r.problem), prompt=prompt.text, raw=raw,
                        logprob=round(c.logprob, 4), num_tokens=c.num_tokens, finish=c.finish, meta=meta)
        if on_sample is not None:
            on_sample(out[i])

    reqs = [Request(prompts[r.prompt_key].text, prompts[r.prompt_key].stop + list(cfg.stop), *r.sampling(cfg), r.prefix,
                    request_seed(cfg.seed, r.problem.id, r.index) if r.seed is None else r.seed) for r in requests]
    if requests and supports_streaming(lm.model):  # causal, full attention: continuous batching
        decode_stream(lm.model, lm.tokenizer, reqs, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                      max_prompt_tokens=cfg.max_prompt_tokens, on_step=on_step, on_done=done)
    elif requests:
        _decode_static(lm, reqs, cfg, done, on_step)
    return out  # type: ignore[return-value]


def prompt_with_feedback(problem: Problem, tokenizer, style: str, is_encoder_decoder: bool,
                         feedback: str | None) -> Prompt:
    """The problem's prompt, with ``feedback`` after the task: in a chat prompt at the end of the
    user's message, in a plain one as comment lines before it. The program still starts with the
    prompt's own code (``Prompt.prefix``), so extraction is unchanged."""
    prompt = build_prompt(problem, tokenizer, style, is_encoder_decoder)
    if not feedback:
        return prompt
    if prompt.style == "chat":
        return chat_prompt(problem, tokenizer, feedback)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in feedback.splitlines())
    bos = getattr(tokenizer, "bos_token", None) or ""
    head = bos if prompt.text.startswith(bos) else ""
    prompt.text = head + comment + prompt.text[len(head):]
    return prompt


def _check(lm: LoadedModel, requests: Sequence[GenRequest], prompts: dict[tuple, Prompt],
           cfg: GenerationConfig) -> None:
    """One request per (problem, index) (a sample's key); a prefix only after a prompt that fits
    in ``max_prompt_tokens`` (causal models: cutting the start of prompt + prefix would make the
    model read another prompt than its samples record)."""
    seen = {}
    sizes = {}
    for n, r in enumerate(requests):
        if r.key in seen:
            raise RequestError(f"generation requests {seen[r.key]} and {n} are both for "
                               f"{r.problem.id!r} index {r.index}: a sample's (problem, index) is its key")
        seen[r.key] = n
        if not r.prefix or lm.is_encoder_decoder:
            continue
        pk = r.prompt_key
        if pk not in sizes:
            sizes[pk] = len(lm.tokenizer(prompts[pk].text, add_special_tokens=False).input_ids)
        if sizes[pk] > cfg.max_prompt_tokens:
            raise RequestError(f"generation request {n} ({r.problem.id!r} index {r.index}): its prompt has "
                               f"{sizes[pk]} tokens, more than max_prompt_tokens "
                               f"({cfg.max_prompt_tokens}); a prompt is cut only without a prefix "
                               "(raise max_prompt_tokens, or continue no prefix of this problem)")


def _decode_static(lm: LoadedModel, reqs: list[Request], cfg: GenerationConfig,
                   done: Callable[[int, Completion], None], on_step) -> None:
    """Models decode_stream does not serve (encoder-decoders, sliding-window attention): static
    batches of up to ``batch_size`` (finished rows still leave the batch), one sampling setting
    each (greedy first), in windows of a few batches of requests."""
    step = 4 * cfg.batch_size
    for w in range(0, len(reqs), step):
        groups = {}
        for i in range(w, min(w + step, len(reqs))):
            groups.setdefault((reqs[i].temperature, reqs[i].top_p), []).append(i)
        for (temperature, top_p), group in sorted(groups.items()):
            group.sort(key=lambda i: len(reqs[i].prompt) + len(reqs[i].prefix))
            for b in range(0, len(group), cfg.batch_size):
                ids = group[b:b + cfg.batch_size]
                batch = [reqs[i] for i in ids]
                completions = decode_batch(
                    lm.model, lm.tokenizer, [r.prompt for r in batch], stop=[r.stop for r in batch],
                    prefixes=[r.prefix for r in batch], max_new_tokens=cfg.max_new_tokens,
                    temperature=temperature, top_p=top_p, is_encoder_decoder=lm.is_encoder_decoder,
                    max_prompt_tokens=cfg.max_prompt_tokens, on_step=on_step, seeds=[r.seed for r in batch])
                for i, c in zip(ids, completions):
                    done(i, c)
