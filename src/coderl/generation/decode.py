"""Batched decoding with per-sequence stop strings, optionally continuing a prefix.

Each step samples (or picks greedily) the next token of every unfinished sequence; a sequence
finishes on an end-of-sequence token, on one of its stop strings (looked for in the decoded tail,
so one split across tokens is still seen) or at ``max_new_tokens``, and leaves the batch at once:
its KV-cache rows are dropped, so the others decode faster (``generate`` computes finished rows
until the longest one is done). :func:`decode_stream` (causal models, what ``coderl generate``
uses) also admits new requests into the freed slots (continuous batching); :func:`decode_batch`
decodes one static batch and also serves encoder-decoders.

A *prefix* is text the model already wrote after its prompt. A causal model reads prompt + prefix
tokenized as one text (the boundary tokenizes as anywhere in a text), never truncated; an
encoder-decoder starts its decoder with the prefix's tokens. The completion is the continuation
alone; a stop string counts only where it ends in the continuation. Each token's log-probability
is the model's own (temperature 1, no top-p), what RL and the critic work with; ``logprob`` sums it.

Noise: a request with a ``seed`` draws its t-th token by inverse transform sampling with the
uniform :func:`uniforms` gives for (seed, t): what it samples depends on its seed and logits only,
not on the batch, the order of the requests, the process or the machine (up to the last bits of
floating-point rounding, which differ between batch shapes: a draw that close to a boundary between
two tokens may go either way). Requests without one draw from ``generator``.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from itertools import groupby

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


@dataclass
class Completion:
    text: str            # decoded generated text (special tokens skipped), stop string included
    token_ids: list[int]
    logprob: float       # sum of the model's log-probabilities of token_ids
    finish: str          # "stop" (stop string), "eos" or "length"

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Request:
    """One sequence to decode: its prompt, stop strings, decoding settings and the text after
    the prompt it continues (``prefix``)."""

    prompt: str
    stop: list[str]
    temperature: float = 0.0   # 0: greedy
    top_p: float = 1.0
    prefix: str = ""
    seed: int | None = None    # its noise (module docstring); None: the decoder's generator


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    n = logits.shape[0]
    return _sample_rows(logits, logits.new_full((n,), temperature), logits.new_full((n,), top_p), generator)


_GAMMA, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniforms(seeds: list[int], steps: list[int]) -> list[float]:
    """The uniform number in (0, 1) of each (seed, step): SplitMix64's output for state
    ``seed + (step + 1) * gamma``, its top 53 bits, centred in its interval (a counter-based
    generator: no state to keep, the same number wherever and whenever it is asked for)."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = (np.array(seeds, dtype=np.uint64) + (np.array(steps, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GAMMA))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        z = z ^ (z >> np.uint64(31))
    return (((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53).tolist()


def _draw(probs: torch.Tensor, generator: torch.Generator | None, u: torch.Tensor | None) -> torch.Tensor:
    """One index per row of the (unnormalized) ``probs``: by ``torch.multinomial`` from
    ``generator``, or, given each row's uniform ``u``, the first index whose cumulative mass
    exceeds ``u`` times the row's total (inverse transform sampling)."""
    if u is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    c = probs.cumsum(-1)
    idx = (c < (u.to(c.dtype) * c[:, -1])[:, None]).sum(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


TOP_K_FAST = 256  # the nucleus is looked for among this many most likely tokens first


def _nucleus_full(scaled: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator | None,
                  u: torch.Tensor | None) -> torch.Tensor:
    """Top-p sampling over the whole vocabulary (a full sort: ~4 ms per row for 49k tokens)."""
    if bool((top_p >= 1).all()):  # no nucleus: the whole distribution, nothing to sort
        return _draw(scaled.softmax(-1), generator, u)
    sorted_logits, order = scaled.sort(-1, descending=True)
    probs = sorted_logits.softmax(-1)
    remove = (probs.cumsum(-1) - probs) > top_p[:, None]  # keep the smallest set reaching top_p
    probs = probs.masked_fill(remove, 0.0)
    return order.gather(-1, _draw(probs, generator, u)[:, None]).squeeze(-1)


def _sample_rows(logits: torch.Tensor, temp: torch.Tensor, top_p: torch.Tensor,
                 generator: torch.Generator | None, u: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row temperature / top-p; rows with temperature 0 are greedy. The nucleus almost always
    lies within the ``TOP_K_FAST`` most likely tokens: found there with ``topk`` instead of a
    full sort (which cost as much as the forward pass at batch 32); rows whose nucleus is wider
    take the full sort. The distribution sampled from is the same either way. ``u``: each row's
    uniform (inverse transform sampling, see :func:`_draw`), else ``generator``'s noise."""
    greedy = logits.argmax(-1)
    sampling = temp > 0
    if not bool(sampling.any()):
        return greedy
    scaled = logits / temp.clamp(min=1e-6)[:, None]
    k = min(TOP_K_FAST, scaled.shape[-1])
    top, order = scaled.topk(k, -1)  # sorted, most likely first
    probs = (top - scaled.logsumexp(-1, keepdim=True)).exp()
    before = probs.cumsum(-1) - probs  # mass of the more likely tokens
    inside = before[:, -1] > top_p     # the nucleus ends before the k-th token
    probs = probs.masked_fill(before > top_p[:, None], 0.0)
    drawn = order.gather(-1, _draw(probs, generator, u)[:, None]).squeeze(-1)
    wide = sampling & ~inside
    if bool(wide.any()):
        rows = wide.nonzero().squeeze(-1)
        drawn[rows] = _nucleus_full(scaled[rows], top_p[rows], generator, None if u is None else u[rows])
    return torch.where(sampling, drawn, greedy)


def _cache_of(out):
    cache = getattr(out, "cache", None)  # transformers >= 5.x names it ``cache``
    return cache if cache is not None else out.past_key_values


def _grow(mask: torch.Tensor) -> torch.Tensor:
    """The attention mask with one more (attended) position: the token about to be fed."""
    return torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)


def _encode(tokenizer, texts: list[tuple[str, str]], max_prompt_tokens: int | None, special: bool, device):
    """Each (prompt, prefix) of ``texts`` tokenized as one text, padded as the tokenizer pads (on
    the left for causal models). A prompt alone keeps its last ``max_prompt_tokens`` tokens (the
    tokenizers truncate on the left); a prompt with a prefix is not truncated."""
    ids = [tokenizer(prompt + prefix, add_special_tokens=special,
                     truncation=max_prompt_tokens is not None and not prefix,
                     max_length=None if prefix else max_prompt_tokens).input_ids for prompt, prefix in texts]
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)


def _hits_stop(tokenizer, ids: list[int], stop: list[str], tail: int, prefix: str) -> bool:
    """Whether the generated tokens ``ids`` show one of ``stop`` (their last ``tail`` tokens are
    decoded). While those are all of them, the end of ``prefix`` is read in front: a stop string
    may start there, but it must end in the generated text."""
    text = tokenizer.decode(ids[-tail:], skip_special_tokens=True)
    if not prefix or len(ids) > tail:
        return any(s in text for s in stop)
    head = prefix[max(0, len(prefix) - max(map(len, stop)) + 1):]
    text = head + text
    return any(text.find(s, max(0, len(head) - len(s) + 1)) != -1 for s in stop)


def _run(batch: _Batch, tokenizer, requests: list[Request], max_new_tokens: int,
         generator: torch.Generator | None, on_step, on_done) -> list[Completion]:
    """The decoding loop: sample each row's next token, record it, finish the rows that end
    (``on_done(i, completion)``), ``on_step(n_active)``, then ``batch.advance``; until no request
    is left. Returns the completions in request order."""
    eos_ids = {tokenizer.eos_token_id}  # the tokenizer's and the model's
    for src in (getattr(batch.model, "generation_config", None), batch.model.config):
        e = getattr(src, "eos_token_id", None)
        eos_ids.update(e if isinstance(e, (list, tuple)) else [e])
    eos = torch.tensor(sorted(eos_ids - {None}), device=batch.device)
    # how many of a sequence's last tokens are decoded to look for its stop strings
    tail = max([len(tokenizer.encode(s, add_special_tokens=False)) for r in requests for s in r.stop] + [1]) + 2
    seeded = all(r.seed is not None for r in requests)
    results = [None] * len(requests)
    tokens = defaultdict(list)
    logps = defaultdict(list)
    while batch.rows:
        rows, logits = batch.rows, batch.logits
        temp = torch.tensor([requests[r].temperature for r in rows], device=batch.device)
        top_p = torch.tensor([requests[r].top_p for r in rows], device=batch.device)
        # a seeded row's uniform for its next token: (its seed, tokens it has so far)
        u = torch.tensor(uniforms([requests[r].seed for r in rows], [len(tokens[r]) for r in rows]),
                         dtype=torch.float32, device=batch.device) if seeded else None
        nxt = _sample_rows(logits, temp, top_p, generator, u)
        chosen = logits.log_softmax(-1).gather(-1, nxt[:, None]).squeeze(-1).tolist()
        is_eos = torch.isin(nxt, eos).tolist()
        keep = []
        for j, (r, t) in enumerate(zip(rows, nxt.tolist())):
            ids, req = tokens[r], requests[r]
            ids.append(t)
            logps[r].append(chosen[j])
            if is_eos[j]:
                finish = "eos"
            elif req.stop and _hits_stop(tokenizer, ids, req.stop, tail, req.prefix):
                finish = "stop"
            elif len(ids) >= max_new_tokens:
                finish = "length"
            else:
                keep.append(j)
                continue
            text = tokenizer.decode(ids[:-1] if finish == "eos" else ids, skip_special_tokens=True)
            results[r] = Completion(text, tokens.pop(r), float(sum(logps.pop(r))), finish)
            if on_done is not None:
                on_done(r, results[r])
        if on_step is not None:
            on_step(len(rows))
        batch.advance(nxt, keep)
    return results  # type: ignore[return-value]


class _Batch:
    """The model side of :func:`_run`: the requests in flight (``rows``, request indices), their
    KV cache, attention mask and next-token ``logits``; ``advance(nxt, keep)`` drops the finished
    rows (all but the positions ``keep``) and feeds the others their next token ``nxt``."""

    def __init__(self, model, tokenizer, max_prompt_tokens: int | None):
        self.model, self.tokenizer, self.max_prompt_tokens = model, tokenizer, max_prompt_tokens
        self.device = next(model.parameters()).device
        self.rows: list[int] = []
        self.cache = self.mask = self.logits = None

    def _prefill(self, texts: list[tuple[str, str]]):
        """A causal model's first forward pass over (prompt, prefix) ``texts``: (mask, output)."""
        enc = _encode(self.tokenizer, texts, self.max_prompt_tokens, False, self.device)
        m = enc.attention_mask
        # logits of the last position only (a vocabulary of 262k: GBs per batch)
        return m, self.model(input_ids=enc.input_ids, attention_mask=m, position_ids=(m.cumsum(-1) - 1).clamp(min=0),
                             use_cache=True, logits_to_keep=1)

    def _read(self, out) -> None:
        self.cache, self.logits = _cache_of(out), out.logits[:, -1, :].float()

    def _step(self, nxt: torch.Tensor) -> None:
        """Feed each row of a causal model its next token ``nxt``."""
        self.mask = _grow(self.mask)
        self._read(self.model(input_ids=nxt[:, None], attention_mask=self.mask,
                              position_ids=self.mask.sum(-1, keepdim=True) - 1, cache=self.cache, use_cache=True))


class _StaticBatch(_Batch):
    """The batch of :func:`decode_batch`, causal or encoder-decoder: every request from the start."""

    def __init__(self, model, tokenizer, requests: list[Request], is_encoder_decoder: bool,
                 max_prompt_tokens: int | None):
        super().__init__(model, tokenizer, max_prompt_tokens)
        self.enc_dec, self.rows = is_encoder_decoder, list(range(len(requests)))
        if is_encoder_decoder:  # the decoder starts with its start token and the prefix, left-padded
            enc = _encode(tokenizer, [(r.prompt, "") for r in requests], max_prompt_tokens, True, self.device)
            self.mask = enc.attention_mask
            self.encoder_out = model.get_encoder()(input_ids=enc.input_ids, attention_mask=self.mask)
            start = model.config.decoder_start_token_id
            start = tokenizer.pad_token_id if start is None else start
            heads = [[start] + tokenizer(r.prefix, add_special_tokens=False).input_ids for r in requests]
            width = max(map(len, heads))
            dec = torch.tensor([[start] * (width - len(h)) + h for h in heads], device=self.device)
            self.dec_mask = None if all(len(h) == width for h in heads) else torch.tensor(  # None: no padding
                [[0] * (width - len(h)) + [1] * len(h) for h in heads], device=self.device)
            out = model(encoder_outputs=self.encoder_out, attention_mask=self.mask,
                        decoder_input_ids=dec, decoder_attention_mask=self.dec_mask, use_cache=True)
        else:
            self.mask, out = self._prefill([(r.prompt, r.prefix) for r in requests])
        self._read(out)

    def advance(self, nxt: torch.Tensor, keep: list[int]) -> None:
        if len(keep) < len(self.rows):  # drop finished rows from the batch and the cache
            self.rows = [self.rows[j] for j in keep]
            if not keep:
                return
            idx = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(idx)
            nxt, self.mask = nxt[idx], self.mask[idx]
            if self.enc_dec:
                self.encoder_out.last_hidden_state = self.encoder_out.last_hidden_state[idx]
                if self.dec_mask is not None:
                    self.dec_mask = self.dec_mask[idx]
        if not self.enc_dec:
            return self._step(nxt)
        if self.dec_mask is not None:
            self.dec_mask = _grow(self.dec_mask)
        self._read(self.model(encoder_outputs=self.encoder_out, attention_mask=self.mask, cache=self.cache,
                              decoder_input_ids=nxt[:, None], decoder_attention_mask=self.dec_mask, use_cache=True))


@torch.inference_mode()
def decode_batch(model, tokenizer, prompts: list[str], *, stop: list[list[str]] | None = None,
                 prefixes: list[str] | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, generator: torch.Generator | None = None, is_encoder_decoder: bool = False,
                 max_prompt_tokens: int | None = None, on_step=None,
                 seeds: list[int] | None = None) -> list[Completion]:
    """Decode one batch of prompts; ``stop[i]`` are the stop strings of prompt ``i``,
    ``prefixes[i]`` the text it continues, ``seeds[i]`` its noise (module docstring; None: draws
    from ``generator``); ``on_step(n_active)`` is called after every step."""
    requests = [Request(p, stop[i] if stop else [], temperature, top_p, prefixes[i] if prefixes else "",
                        None if seeds is None else seeds[i]) for i, p in enumerate(prompts)]
    batch = _StaticBatch(model, tokenizer, requests, is_encoder_decoder, max_prompt_tokens)
    return _run(batch, tokenizer, requests, max_new_tokens, generator, on_step, None)


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer whose keys/values are views into buffers with spare rows and positions.
    ``DynamicLayer`` appends with ``torch.cat``, copying the whole cache at every step (a third of
    a step at batch 32); here a new token is written in place, admitted requests into spare rows
    (``add_rows``), finished ones replaced by the last rows (``keep_rows``); the buffers are
    reallocated only when their positions run out (growing by half) or a prompt is longer."""

    SPARE = 64  # least number of free positions after the last one

    def __init__(self, keys_like: torch.Tensor, values_like: torch.Tensor, max_rows: int, width: int):
        super().__init__()
        self.device, self.is_initialized = keys_like.device, True
        self._kb, self._vb = (like.new_empty((max_rows, like.shape[1], width + self.SPARE, like.shape[3]))
                              for like in (keys_like, values_like))
        self._view(0, 0, width)

    def _view(self, rows: int, start: int, end: int) -> None:
        """Rows ``:rows`` and positions ``start:end`` of the buffers are the cache."""
        self._rows, self._start, self._end = rows, start, end
        self.keys, self.values = (b[:rows, :, start:end] for b in (self._kb, self._vb))

    @property
    def free_rows(self) -> int:
        return self._kb.shape[0] - self._rows

    @property
    def width(self) -> int:
        return self._end - self._start

    def add_rows(self, keys: torch.Tensor, values: torch.Tensor, count: int) -> None:
        """Append ``count`` rows: ``keys``/``values`` (one row, broadcast, or ``count`` rows) of
        length ``n`` <= ``width``, left-padded with zeros (masked, but they must be finite)."""
        a, b, n, s, e = self._rows, self._rows + count, keys.shape[2], self._start, self._end
        for buf, src in ((self._kb, keys), (self._vb, values)):
            buf[a:b, :, s:e - n] = 0
            buf[a:b, :, e - n:e] = src
        self._view(b, s, e)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        add = key_states.shape[-2]
        if self._end + add > self._kb.shape[-2]:  # out of positions: move to a longer buffer
            n = self.width
            kb, vb = (b.new_empty((b.shape[0], b.shape[1], n + add + max(self.SPARE, n // 2), b.shape[3]))
                      for b in (self._kb, self._vb))
            kb[:self._rows, :, :n], vb[:self._rows, :, :n] = self.keys, self.values
            self._kb, self._vb, self._start, self._end = kb, vb, 0, n
        for buf, new in ((self._kb, key_states), (self._vb, value_states)):
            buf[:self._rows, :, self._end:self._end + add] = new
        self._view(self._rows, self._start, self._end + add)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        keys, values = self.keys[indices], self.values[indices]  # copies
        n, s, e = len(indices), self._start, self._end
        self._kb[:n, :, s:e], self._vb[:n, :, s:e] = keys, values
        self._view(n, s, e)

    def keep_rows(self, order: list[int]) -> None:
        """Keep rows ``order`` (see :func:`_compaction`): the rows that change place are copied
        into the holes, the rest stay where they are (``batch_select_indices`` copies them all)."""
        moved = [(p, j) for p, j in enumerate(order) if p != j]
        if moved:
            dst, src = (torch.tensor(x, device=self._kb.device) for x in zip(*moved))
            self._kb[dst], self._vb[dst] = self._kb[src], self._vb[src]
        self._view(len(order), self._start, self._end)

    def trim_left(self, n: int) -> None:
        """Forget the first ``n`` positions (padding in every row)."""
        self._view(self._rows, self._start + n, self._end)


def _compaction(keep: list[int]) -> list[int]:
    """The row order after dropping finished rows: kept rows stay in place, and the last kept rows
    move into the holes, so only they are copied. ``keep``: the kept row positions, ascending."""
    n, kept = len(keep), set(keep)
    movers = [j for j in keep if j >= n]
    return [p if p in kept else movers.pop() for p in range(n)]


class _GrowingCache(DynamicCache):
    def __init__(self, layers: list[_GrowingLayer]):
        Cache.__init__(self, layers=layers)


def supports_streaming(model) -> bool:
    """:func:`decode_stream` manages the KV cache itself, as full-attention layers; models with
    other layer kinds (sliding windows, ...) and encoder-decoders decode with :func:`decode_batch`."""
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config transformers cannot map to cache layers
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


class _Stream(_Batch):
    """The batch of :func:`decode_stream`: admits the requests in order, into a cache of
    :class:`_GrowingLayer`, and keeps the prefills of the last few (prompt, prefix)."""

    KEEP_PREFILLS = 4  # those of the last few problems (or prefixes)

    def __init__(self, model, tokenizer, requests: list[Request], batch_size: int, max_prompt_tokens: int | None):
        super().__init__(model, tokenizer, max_prompt_tokens)
        self.requests, self.batch_size, self.next = requests, batch_size, 0
        # (prompt, prefix) -> (keys per layer, values per layer, next-token logits) of its
        # prefill, padding stripped: the n samples of a problem (the continuations of a prefix)
        # share one prefill (the naive loop computes n)
        self.prefilled: OrderedDict[tuple[str, str], tuple[list, list, torch.Tensor]] = OrderedDict()
        self._refill()

    def _refill(self) -> None:
        """Admit the next requests once a quarter of the slots are free (or none is in flight): the
        (prompt, prefix) texts not prefilled recently are prefilled together, and each text's KV rows
        are written into spare rows of the cache, broadcast to the adjacent requests that share it."""
        free = self.batch_size - len(self.rows)
        if self.next >= len(self.requests) or free < max(1, self.batch_size // 4):
            return
        ids = list(range(self.next, min(self.next + free, len(self.requests))))
        self.next = ids[-1] + 1
        texts = [(self.requests[i].prompt, self.requests[i].prefix) for i in ids]
        missing = list(dict.fromkeys(t for t in texts if t not in self.prefilled))
        if missing:
            m, out = self._prefill(missing)
            layers, lg = _cache_of(out).layers, out.logits[:, -1, :].float()
            for b, text in enumerate(missing):
                n = int(m[b].sum())
                self.prefilled[text] = ([layer.keys[b:b + 1, :, -n:].clone() for layer in layers],
                                        [layer.values[b:b + 1, :, -n:].clone() for layer in layers],
                                        lg[b:b + 1].clone())
        entries = [self.prefilled[t] for t in texts]
        for t in texts:
            self.prefilled.move_to_end(t)
        lengths = [e[0][0].shape[2] for e in entries]
        self._make_room(entries[0], len(ids), max(lengths))
        for text, run in groupby(texts):  # adjacent requests sharing a text
            count = len(list(run))
            for layer, k, v in zip(self.cache.layers, *self.prefilled[text][:2]):
                layer.add_rows(k, v, count)
        width = self.cache.layers[0].width  # each text left-padded to it
        starts = width - torch.tensor(lengths, device=self.device)[:, None]
        new_mask = (torch.arange(width, device=self.device) >= starts).long()
        self.mask = new_mask if self.mask is None else torch.cat([self.mask, new_mask])
        self.logits = torch.cat(([] if self.logits is None else [self.logits]) + [e[2] for e in entries])
        self.rows.extend(ids)
        while len(self.prefilled) > self.KEEP_PREFILLS:
            self.prefilled.popitem(last=False)

    def _make_room(self, like: tuple[list, list, torch.Tensor], count: int, longest: int) -> None:
        """A new cache when this one lacks ``count`` free rows or ``longest`` positions: room for
        a full batch, as wide as the longest text, the rows in flight copied first."""
        first = self.cache.layers[0] if self.cache is not None else None
        if first is not None and first.free_rows >= count and first.width >= longest:
            return
        width = longest if first is None else max(longest, first.width)
        rows_max = max(self.batch_size, len(self.rows) + count)
        layers = [_GrowingLayer(k, v, rows_max, width) for k, v in zip(*like[:2])]
        if first is not None:
            for layer, old in zip(layers, self.cache.layers):
                layer.add_rows(old.keys, old.values, len(self.rows))
            self.mask = torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0))
        self.cache = _GrowingCache(layers)

    def advance(self, nxt: torch.Tensor, keep: list[int]) -> None:
        """Also admits the next requests when slots are free."""
        if not keep:
            self.rows, self.cache, self.mask, self.logits = [], None, None, None
        else:
            if len(keep) < len(self.rows):
                order = _compaction(keep)
                self.rows = [self.rows[j] for j in order]
                for layer in self.cache.layers:
                    layer.keep_rows(order)
                idx = torch.tensor(order, dtype=torch.long, device=self.device)
                nxt, self.mask = nxt[idx], self.mask[idx]
                lead = int(self.mask.any(0).float().argmax())  # columns that are padding in every row
                if lead:
                    self.mask = self.mask[:, lead:]
                    for layer in self.cache.layers:
                        layer.trim_left(lead)
            self._step(nxt)
        self._refill()


@torch.inference_mode()
def decode_stream(model, tokenizer, requests: list[Request], *, batch_size: int = 16,
                  max_new_tokens: int = 256, generator: torch.Generator | None = None,
                  max_prompt_tokens: int | None = None, on_step=None, on_done=None) -> list[Completion]:
    """Continuous batching for causal models: at most ``batch_size`` sequences in flight; new requests
    (in order) join once a quarter of the slots are free, prefilled together, left-padded to the
    cache's length; a request with a recent one's prompt and prefix reuses its prefill (a problem's n
    samples cost one forward over the prompt, not n). ``on_done(i, completion)`` as request ``i``
    finishes, ``on_step(n_active)`` after every step; returns the completions in request order.
    Every request has a seed (its own noise) or none has (``generator``'s)."""
    if not supports_streaming(model):
        raise ValueError(f"decode_stream: {type(model).__name__} has attention layers other than full "
                         "attention (e.g. sliding windows) or is an encoder-decoder: use decode_batch")
    if len({r.seed is None for r in requests}) > 1:
        raise ValueError("decode_stream: every request has a seed or none has")
    batch = _Stream(model, tokenizer, requests, batch_size, max_prompt_tokens)
    return _run(batch, tokenizer, requests, max_new_tokens, generator, on_step, on_done)
