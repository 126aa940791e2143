"""Batched decoding with per-sequence stop strings, optionally continuing a prefix.

Each step samples (or picks greedily) the next token of every unfinished sequence; a sequence
finishes on an end-of-sequence token, on one of its stop strings (looked for in the decoded tail,
so a stop string split across tokens is still seen) or at ``max_new_tokens``, and leaves the
batch at once: its KV-cache rows are dropped, so the others decode faster (``generate`` keeps
computing finished rows until the longest one is done). :func:`decode_stream` (causal models,
what ``coderl generate`` uses) also admits new requests into the freed slots (continuous
batching); :func:`decode_batch` decodes one static batch and also serves encoder-decoders.

A *prefix* is text the model already wrote after its prompt. A causal model reads prompt + prefix
tokenized as one text (so the boundary tokenizes as anywhere in a text), never truncated; an
encoder-decoder starts its decoder with the prefix's tokens. The completion is the continuation
alone, and a stop string counts only where it ends in the continuation.

The log-probability recorded per token is the model's own (temperature 1, no top-p): the
log-likelihood RL and the critic work with; ``logprob`` is its sum over the sequence.

Noise: a request with a ``seed`` draws its t-th token by inverse transform sampling with the
uniform number :func:`uniforms` gives for (seed, t): what it samples depends on its own seed and
logits only, not on the batch it shares, the order of the requests, the process or the machine
that decodes it (up to the last bits of floating-point rounding, which differ between batch
shapes: a draw within that of a boundary between two tokens may go either way). Requests without
one draw from ``generator``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                 generator: torch.Generator | None, u: torch.Tensor | None = None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    n = logits.shape[0]
    return _sample_rows(logits, logits.new_full((n,), temperature), logits.new_full((n,), top_p), generator, u)


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


def _row_uniforms(seeds: list[int | None], rows: list[int], tokens: dict[int, list[int]], device) -> torch.Tensor:
    """Each active row's uniform for its next token: (its request's seed, tokens it has so far)."""
    return torch.tensor(uniforms([seeds[r] for r in rows], [len(tokens[r]) for r in rows]),
                        dtype=torch.float32, device=device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if e is not None:
            ids.update(e if isinstance(e, (list, tuple)) else [e])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _cache_of(out):
    cache = getattr(out, "cache", None)  # transformers >= 5.x names it ``cache``
    return cache if cache is not None else out.past_key_values


def _grow(mask: torch.Tensor) -> torch.Tensor:
    """The attention mask with one more (attended) position: the token about to be fed."""
    return torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)


def _encode(tokenizer, prompts: list[str], prefixes: list[str], max_prompt_tokens: int | None,
            special: bool, device):
    """``prompts[i] + prefixes[i]``, each tokenized as one text, padded as the tokenizer pads
    (on the left for causal models). A prompt alone keeps its last ``max_prompt_tokens`` tokens
    (the tokenizers truncate on the left); a prompt with a prefix is not truncated."""
    ids = []
    for prompt, prefix in zip(prompts, prefixes):
        cut = max_prompt_tokens is not None and not prefix
        ids.append(tokenizer(prompt + prefix, add_special_tokens=special, truncation=cut,
                             max_length=max_prompt_tokens if cut else None).input_ids)
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)


def _tail_len(tokenizer, stops: list[list[str]]) -> int:
    """How many of a sequence's last tokens are decoded to look for its stop strings."""
    return max([len(tokenizer.encode(s, add_special_tokens=False)) for ss in stops for s in ss]
               + [1]) + 2


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


def _finish(tokenizer, ids: list[int], is_eos: bool, stop: list[str], prefix: str, tail: int,
            max_new_tokens: int) -> str | None:
    """Why a sequence whose generated tokens are ``ids`` ends now ("eos", "stop", "length"), or
    None while it goes on."""
    if is_eos:
        return "eos"
    if stop and _hits_stop(tokenizer, ids, stop, tail, prefix):
        return "stop"
    return "length" if len(ids) >= max_new_tokens else None


def _completion(tokenizer, ids: list[int], logps: list[float], finish: str) -> Completion:
    text_ids = ids[:-1] if finish == "eos" else ids
    return Completion(text=tokenizer.decode(text_ids, skip_special_tokens=True), token_ids=ids,
                      logprob=float(sum(logps)), finish=finish)


def _take_tokens(tokenizer, logits, nxt, eos, rows: list[int], tokens: dict, logps: dict, ends,
                 tail: int, max_new_tokens: int, done) -> list[int]:
    """Append each row's next token ``nxt`` (and its log-probability under ``logits``) to its
    request's; ``done(r, completion)`` for each request ``r`` that finishes (``ends(r)``: its
    stop strings and prefix). Returns the positions of the rows that go on."""
    chosen = logits.log_softmax(-1).gather(-1, nxt[:, None]).squeeze(-1).tolist()
    is_eos = torch.isin(nxt, eos).tolist()
    keep: list[int] = []
    for j, (r, t) in enumerate(zip(rows, nxt.tolist())):
        tokens[r].append(t)
        logps[r].append(chosen[j])
        finish = _finish(tokenizer, tokens[r], is_eos[j], *ends(r), tail, max_new_tokens)
        if finish is None:
            keep.append(j)
        else:
            done(r, _completion(tokenizer, tokens.pop(r), logps.pop(r), finish))
    return keep


@torch.inference_mode()
def decode_batch(model, tokenizer, prompts: list[str], *, stop: list[list[str]] | None = None,
                 prefixes: list[str] | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, is_encoder_decoder: bool = False,
                 max_prompt_tokens: int | None = None, on_step=None,
                 seeds: list[int] | None = None) -> list[Completion]:
    """Decode one batch of prompts; ``stop[i]`` are the stop strings of prompt ``i``,
    ``prefixes[i]`` the text it continues, ``seeds[i]`` its noise (module docstring; None: draws
    from ``generator``); ``on_step(n_active)`` is called after every step."""
    stop = stop or [[] for _ in prompts]
    prefixes = prefixes or ["" for _ in prompts]
    tail = _tail_len(tokenizer, stop)
    batch = _StaticBatch(model, tokenizer, prompts, prefixes, is_encoder_decoder, max_prompt_tokens)
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=batch.device)
    rows = list(range(len(prompts)))      # original index of each active row
    tokens: dict[int, list[int]] = {r: [] for r in rows}
    logps: dict[int, list[float]] = {r: [] for r in rows}
    results: list[Completion | None] = [None] * len(prompts)
    for _ in range(max_new_tokens):
        u = _row_uniforms(seeds, rows, tokens, batch.device) if seeds is not None and temperature > 0 else None
        nxt = _sample_next(batch.logits, temperature, top_p, generator, u)
        keep = _take_tokens(tokenizer, batch.logits, nxt, eos, rows, tokens, logps, lambda r: (stop[r], prefixes[r]),
                            tail, max_new_tokens, results.__setitem__)
        if on_step is not None:
            on_step(len(rows))
        if not keep:
            break
        if len(keep) < len(rows):  # drop finished rows from the batch and the cache
            idx = torch.tensor(keep, device=batch.device)
            batch.keep(idx)
            nxt = nxt[idx]
            rows = [rows[j] for j in keep]
        batch.step(nxt)
    return results  # type: ignore[return-value]


class _StaticBatch:
    """The model side of :func:`decode_batch`, causal or encoder-decoder: the first forward pass,
    dropping rows, one step; ``logits`` are each row's next-token logits."""

    def __init__(self, model, tokenizer, prompts: list[str], prefixes: list[str],
                 is_encoder_decoder: bool, max_prompt_tokens: int | None):
        self.model, self.enc_dec = model, is_encoder_decoder
        self.device = next(model.parameters()).device
        if is_encoder_decoder:  # the prefixes go to the decoder
            enc = _encode(tokenizer, prompts, ["" for _ in prompts], max_prompt_tokens, True, self.device)
            self.mask = enc.attention_mask
            self.encoder_out = model.get_encoder()(input_ids=enc.input_ids, attention_mask=self.mask)
            dec, self.dec_mask = _decoder_start(model, tokenizer, prefixes, self.device)
            out = model(encoder_outputs=self.encoder_out, attention_mask=self.mask,
                        decoder_input_ids=dec, decoder_attention_mask=self.dec_mask, use_cache=True)
        else:
            enc = _encode(tokenizer, prompts, prefixes, max_prompt_tokens, False, self.device)
            self.mask = enc.attention_mask
            pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
            # logits of the last position only (a vocabulary of 262k: GBs per batch)
            out = model(input_ids=enc.input_ids, attention_mask=self.mask, position_ids=pos,
                        use_cache=True, logits_to_keep=1)
        self._read(out)

    def _read(self, out) -> None:
        self.cache, self.logits = _cache_of(out), out.logits[:, -1, :].float()

    def keep(self, idx: torch.Tensor) -> None:
        """Keep rows ``idx`` only."""
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        if self.enc_dec:
            self.encoder_out.last_hidden_state = self.encoder_out.last_hidden_state[idx]
            if self.dec_mask is not None:
                self.dec_mask = self.dec_mask[idx]

    def step(self, nxt: torch.Tensor) -> None:
        """Feed each row its next token ``nxt``."""
        if self.enc_dec:
            if self.dec_mask is not None:
                self.dec_mask = _grow(self.dec_mask)
            out = self.model(encoder_outputs=self.encoder_out, attention_mask=self.mask,
                             decoder_input_ids=nxt[:, None], decoder_attention_mask=self.dec_mask,
                             cache=self.cache, use_cache=True)
        else:
            self.mask = _grow(self.mask)
            out = self.model(input_ids=nxt[:, None], attention_mask=self.mask,
                             position_ids=self.mask.sum(-1, keepdim=True) - 1, cache=self.cache,
                             use_cache=True)
        self._read(out)


def _decoder_start(model, tokenizer, prefixes: list[str], device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An encoder-decoder's first decoder input: the start token and each prefix's tokens,
    left-padded, and their attention mask (None when no row needs padding)."""
    start = model.config.decoder_start_token_id
    if start is None:
        start = tokenizer.pad_token_id
    rows = [[start] + tokenizer(p, add_special_tokens=False).input_ids for p in prefixes]
    width = max(map(len, rows))
    ids = torch.tensor([[start] * (width - len(r)) + r for r in rows], device=device)
    if all(len(r) == width for r in rows):
        return ids, None
    return ids, torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)


@dataclass
class Request:
    """One sequence to decode: its prompt, stop strings, decoding settings and the text after
    the prompt it continues (``prefix``)."""

    prompt: str
    stop: list[str]
    temperature: float = 0.0   # 0: greedy
    top_p: float = 1.0
    prefix: str = ""
    seed: int | None = None    # its noise (module docstring); None: decode_stream's generator


TOP_K_FAST = 256  # the nucleus is looked for among this many most likely tokens first


def _nucleus_full(scaled: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator | None,
                  u: torch.Tensor | None = None) -> torch.Tensor:
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
        self._rows, self._start, self._end = 0, 0, width
        self._view()

    def _view(self) -> None:
        self.keys = self._kb[:self._rows, :, self._start:self._end]
        self.values = self._vb[:self._rows, :, self._start:self._end]

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
        self._rows = b
        self._view()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        add = key_states.shape[-2]
        if self._end + add > self._kb.shape[-2]:  # out of positions: move to a longer buffer
            n = self.width
            kb, vb = (b.new_empty((b.shape[0], b.shape[1], n + add + max(self.SPARE, n // 2), b.shape[3]))
                      for b in (self._kb, self._vb))
            kb[:self._rows, :, :n], vb[:self._rows, :, :n] = self.keys, self.values
            self._kb, self._vb, self._start, self._end = kb, vb, 0, n
        self._kb[:self._rows, :, self._end:self._end + add] = key_states
        self._vb[:self._rows, :, self._end:self._end + add] = value_states
        self._end += add
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        keys, values = self.keys[indices], self.values[indices]  # copies
        self._rows = len(indices)
        self._kb[:self._rows, :, self._start:self._end] = keys
        self._vb[:self._rows, :, self._start:self._end] = values
        self._view()

    def keep_rows(self, order: list[int]) -> None:
        """Keep rows ``order`` (see :func:`_compaction`): the rows that change place are copied
        into the holes, the rest stay where they are (``batch_select_indices`` copies them all)."""
        moved = [(p, j) for p, j in enumerate(order) if p != j]
        if moved:
            dst = torch.tensor([p for p, _ in moved], device=self._kb.device)
            src = torch.tensor([j for _, j in moved], device=self._kb.device)
            self._kb[dst] = self._kb[src]
            self._vb[dst] = self._vb[src]
        self._rows = len(order)
        self._view()

    def trim_left(self, n: int) -> None:
        """Forget the first ``n`` positions (padding in every row)."""
        self._start += n
        self._view()


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


class _Stream:
    """The batch of :func:`decode_stream`: the requests in flight (``rows``), their KV cache,
    attention mask and next-token logits, and the prefills of the last few (prompt, prefix)."""

    KEEP_PREFILLS = 4  # those of the last few problems (or prefixes)

    def __init__(self, model, tokenizer, batch_size: int, max_prompt_tokens: int | None):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_prompt_tokens = batch_size, max_prompt_tokens
        self.device = next(model.parameters()).device
        self.rows: list[int] = []      # request index of each row in flight
        self.cache = self.mask = self.logits = None
        # (prompt, prefix) -> (keys per layer, values per layer, next-token logits) of its
        # prefill, padding stripped: the n samples of a problem (the continuations of a prefix)
        # share one prefill (the naive loop computes n)
        self.prefilled: OrderedDict[tuple[str, str], tuple[list, list, torch.Tensor]] = OrderedDict()

    def _prefill(self, texts: list[tuple[str, str]]) -> None:
        enc = _encode(self.tokenizer, [p for p, _ in texts], [x for _, x in texts],
                      self.max_prompt_tokens, False, self.device)
        m = enc.attention_mask
        out = self.model(input_ids=enc.input_ids, attention_mask=m, logits_to_keep=1,
                         position_ids=(m.cumsum(-1) - 1).clamp(min=0), use_cache=True)
        c, lg = _cache_of(out), out.logits[:, -1, :].float()
        for b, text in enumerate(texts):
            n = int(m[b].sum())
            self.prefilled[text] = ([layer.keys[b:b + 1, :, -n:].clone() for layer in c.layers],
                                    [layer.values[b:b + 1, :, -n:].clone() for layer in c.layers],
                                    lg[b:b + 1].clone())

    def admit(self, ids: list[int], texts: list[tuple[str, str]]) -> None:
        """Join requests ``ids`` (their (prompt, prefix) ``texts``) to the batch: the texts not
        prefilled recently are prefilled together, and each text's KV rows are written into
        spare rows of the cache, broadcast to the adjacent requests that share it."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.prefilled))
        if missing:
            self._prefill(missing)
        entries = [self.prefilled[t] for t in texts]
        for t in texts:
            self.prefilled.move_to_end(t)
        lengths = [e[0][0].shape[2] for e in entries]
        self._make_room(entries[0], len(ids), max(lengths))
        runs = []  # [first, end, prefill] of each run of new requests sharing a text
        for j, e in enumerate(entries):
            if runs and runs[-1][2] is e:
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1, e])
        for a, b, (ks, vs, _) in runs:
            for l, layer in enumerate(self.cache.layers):
                layer.add_rows(ks[l], vs[l], b - a)
        width = self.cache.layers[0].width
        new_mask = torch.zeros((len(ids), width), dtype=torch.long, device=self.device)
        for j, n in enumerate(lengths):
            new_mask[j, width - n:] = 1
        new_logits = torch.cat([e[2] for e in entries])
        self.mask = new_mask if self.mask is None else torch.cat([self.mask, new_mask])
        self.logits = new_logits if self.logits is None else torch.cat([self.logits, new_logits])
        self.rows.extend(ids)
        while len(self.prefilled) > self.KEEP_PREFILLS:
            self.prefilled.popitem(last=False)

    def _make_room(self, like: tuple[list, list, torch.Tensor], count: int, longest: int) -> None:
        """A new cache when this one lacks ``count`` free rows or ``longest`` positions: room for
        a full batch, as wide as the longest text, the rows in flight copied first."""
        first = self.cache.layers[0] if self.cache is not None else None
        if first is not None and first.free_rows >= count and first.width >= longest:
            return
        width = max([longest] + ([first.width] if first is not None else []))
        rows_max = max(self.batch_size, len(self.rows) + count)
        layers = [_GrowingLayer(like[0][l], like[1][l], rows_max, width) for l in range(len(like[0]))]
        if first is not None:
            for layer, old in zip(layers, self.cache.layers):
                layer.add_rows(old.keys, old.values, len(self.rows))
            self.mask = torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0))
        self.cache = _GrowingCache(layers)

    def advance(self, nxt: torch.Tensor, keep: list[int]) -> None:
        """Drop the finished rows (all but the positions ``keep``), then feed the others their
        next token ``nxt``."""
        if len(keep) < len(self.rows):
            order = _compaction(keep)
            self.rows[:] = [self.rows[j] for j in order]
            if not self.rows:
                self.cache = self.mask = self.logits = None
                return
            for layer in self.cache.layers:
                layer.keep_rows(order)
            idx = torch.tensor(order, dtype=torch.long, device=self.device)
            nxt, self.mask = nxt[idx], self.mask[idx]
            lead = int(self.mask.any(0).float().argmax())  # columns that are padding in every row
            if lead:
                self.mask = self.mask[:, lead:]
                for layer in self.cache.layers:
                    layer.trim_left(lead)
        self.mask = _grow(self.mask)
        out = self.model(input_ids=nxt[:, None], attention_mask=self.mask,
                         position_ids=self.mask.sum(-1, keepdim=True) - 1, cache=self.cache,
                         use_cache=True)
        self.cache, self.logits = _cache_of(out), out.logits[:, -1, :].float()


@torch.inference_mode()
def decode_stream(model, tokenizer, requests: list[Request], *, batch_size: int = 16,
                  max_new_tokens: int = 256, generator: torch.Generator | None = None,
                  max_prompt_tokens: int | None = None, on_step=None, on_done=None
                  ) -> list[Completion]:
    """Continuous batching for causal models: decode ``requests`` with at most ``batch_size``
    sequences in flight, admitting new requests (in order) as soon as a quarter of the slots are
    free: they are prefilled together, left-padded to the running cache's length and joined to
    it. A request with the same prompt and prefix as a recent one reuses its prefill (a problem's
    n samples cost one forward over the prompt, not n). ``on_done(i, completion)`` is called as
    request ``i`` finishes, ``on_step(n_active)`` after every step; returns the completions in
    request order. Requests with seeds draw their own noise (module docstring), else
    ``generator``'s."""
    if not supports_streaming(model):
        raise ValueError(f"decode_stream: {type(model).__name__} has attention layers other than full "
                         "attention (e.g. sliding windows) or is an encoder-decoder: use decode_batch")
    batch = _Stream(model, tokenizer, batch_size, max_prompt_tokens)
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=batch.device)
    tail = _tail_len(tokenizer, [r.stop for r in requests])
    results: list[Completion | None] = [None] * len(requests)
    tokens: dict[int, list[int]] = {}
    logps: dict[int, list[float]] = {}
    next_req, refill_at = 0, batch_size - max(1, batch_size // 4)
    seeds = [r.seed for r in requests]
    seeded = any(x is not None for x in seeds)
    if seeded and not all(x is not None for x in seeds):
        raise ValueError("decode_stream: every request has a seed or none has")

    def done(r: int, c: Completion) -> None:
        results[r] = c
        if on_done is not None:
            on_done(r, c)

    while batch.rows or next_req < len(requests):
        if next_req < len(requests) and len(batch.rows) <= refill_at:
            ids = list(range(next_req, min(next_req + batch_size - len(batch.rows), len(requests))))
            next_req = ids[-1] + 1
            for i in ids:
                tokens[i], logps[i] = [], []
            batch.admit(ids, [(requests[i].prompt, requests[i].prefix) for i in ids])
        rows = batch.rows
        temp = torch.tensor([requests[r].temperature for r in rows], device=batch.device)
        top_p = torch.tensor([requests[r].top_p for r in rows], device=batch.device)
        u = _row_uniforms(seeds, rows, tokens, batch.device) if seeded else None
        nxt = _sample_rows(batch.logits, temp, top_p, generator, u)
        keep = _take_tokens(tokenizer, batch.logits, nxt, eos, rows, tokens, logps,
                            lambda r: (requests[r].stop, requests[r].prefix), tail, max_new_tokens, done)
        if on_step is not None:
            on_step(len(rows))
        batch.advance(nxt, keep)
    return results  # type: ignore[return-value]
