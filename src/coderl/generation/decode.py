"""Batched decoding with per-sequence stop strings.

Two loops share the same rules; each step samples (or picks greedily) the next token of every
unfinished sequence, then

* a sequence is finished when it emits an end-of-sequence token, when its generated text contains
  one of its stop strings (checked on the decoded tail, so a stop string split across tokens is
  still seen), or when it reaches ``max_new_tokens``;
* finished sequences leave the batch at once: their rows are dropped from the KV cache, so the
  remaining ones decode faster (``transformers.generate`` keeps computing finished rows until the
  longest one is done).

:func:`decode_stream` (causal models, what ``coderl generate`` uses) also admits new requests
into the freed slots (continuous batching): their prompts are prefilled together, left-padded to
the running cache's length and joined to it. :func:`decode_batch` decodes one static batch and
also serves encoder-decoder models (T5 / CodeT5).

The log-probability recorded per token is the model's own (temperature 1, no top-p), i.e. the
log-likelihood that RL and the critic work with; ``logprob`` is its sum over the sequence.
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
                 generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    n = logits.shape[0]
    return _sample_rows(logits, logits.new_full((n,), temperature), logits.new_full((n,), top_p), generator)


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


@torch.inference_mode()
def decode_batch(model, tokenizer, prompts: list[str], *, stop: list[list[str]] | None = None,
                 max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, is_encoder_decoder: bool = False,
                 max_prompt_tokens: int | None = None, on_step=None) -> list[Completion]:
    """Decode one batch of prompts; ``stop[i]`` are the stop strings of prompt ``i``.

    ``on_step(n_active)`` is called after every step (progress bars).
    """
    n = len(prompts)
    stop = stop or [[] for _ in prompts]
    tail = max([len(tokenizer.encode(s, add_special_tokens=False)) for ss in stop for s in ss]
               + [1]) + 2
    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True,
                    add_special_tokens=is_encoder_decoder, truncation=max_prompt_tokens is not None,
                    max_length=max_prompt_tokens).to(device)
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)

    if is_encoder_decoder:
        enc_mask = enc.attention_mask
        encoder_out = model.get_encoder()(input_ids=enc.input_ids, attention_mask=enc_mask)
        start = model.config.decoder_start_token_id
        if start is None:
            start = tokenizer.pad_token_id
        dec = torch.full((n, 1), start, dtype=torch.long, device=device)
        out = model(encoder_outputs=encoder_out, attention_mask=enc_mask, decoder_input_ids=dec,
                    use_cache=True)
    else:
        mask = enc.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=enc.input_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1)  # the last position's only (a vocabulary of 262k: GBs per batch)
    cache = _cache_of(out)
    logits = out.logits[:, -1, :].float()

    rows = list(range(n))                 # original index of each active row
    tokens: list[list[int]] = [[] for _ in prompts]
    logps: list[list[float]] = [[] for _ in prompts]
    finish = ["length"] * n
    for step in range(max_new_tokens):
        logp_all = logits.log_softmax(-1)
        nxt = _sample_next(logits, temperature, top_p, generator)
        chosen = logp_all.gather(-1, nxt[:, None]).squeeze(-1)
        is_eos = torch.isin(nxt, eos).tolist()
        nxt_l, chosen_l = nxt.tolist(), chosen.tolist()
        keep: list[int] = []
        for j, r in enumerate(rows):
            tokens[r].append(nxt_l[j])
            logps[r].append(chosen_l[j])
            if is_eos[j]:
                finish[r] = "eos"
                continue
            if stop[r]:
                recent = tokenizer.decode(tokens[r][-tail:], skip_special_tokens=True)
                if any(s in recent for s in stop[r]):
                    finish[r] = "stop"
                    continue
            keep.append(j)
        if on_step is not None:
            on_step(len(rows))
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):  # drop finished rows from the batch and the cache
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            nxt = nxt[idx]
            rows = [rows[j] for j in keep]
            if is_encoder_decoder:
                encoder_out.last_hidden_state = encoder_out.last_hidden_state[idx]
                enc_mask = enc_mask[idx]
            else:
                mask = mask[idx]
        if is_encoder_decoder:
            out = model(encoder_outputs=encoder_out, attention_mask=enc_mask,
                        decoder_input_ids=nxt[:, None], cache=cache, use_cache=True)
        else:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            pos = mask.sum(-1, keepdim=True) - 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        cache=cache, use_cache=True)
        cache = _cache_of(out)
        logits = out.logits[:, -1, :].float()

    results = []
    for r in range(n):
        ids = tokens[r]
        text_ids = ids[:-1] if finish[r] == "eos" else ids
        results.append(Completion(text=tokenizer.decode(text_ids, skip_special_tokens=True),
                                  token_ids=ids, logprob=float(sum(logps[r])), finish=finish[r]))
    return results


@dataclass
class Request:
    """One sequence to decode: its prompt, stop strings and decoding settings."""

    prompt: str
    stop: list[str]
    temperature: float = 0.0   # 0: greedy
    top_p: float = 1.0


TOP_K_FAST = 256  # the nucleus is looked for among this many most likely tokens first


def _nucleus_full(scaled: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Top-p sampling over the whole vocabulary (a full sort: ~4 ms per row for 49k tokens)."""
    if bool((top_p >= 1).all()):  # no nucleus: the whole distribution, nothing to sort
        return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)
    sorted_logits, order = scaled.sort(-1, descending=True)
    probs = sorted_logits.softmax(-1)
    remove = (probs.cumsum(-1) - probs) > top_p[:, None]  # keep the smallest set reaching top_p
    probs = probs.masked_fill(remove, 0.0)
    return order.gather(-1, torch.multinomial(probs, 1, generator=generator)).squeeze(-1)


def _sample_rows(logits: torch.Tensor, temp: torch.Tensor, top_p: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Per-row temperature / top-p; rows with temperature 0 are greedy.

    The nucleus (the smallest set of most likely tokens whose mass reaches ``top_p``) almost
    always lies within the ``TOP_K_FAST`` most likely tokens: it is found there with ``topk``
    instead of sorting the whole vocabulary, which cost as much as the model's forward pass at
    batch 32. Rows whose nucleus is wider (or ``top_p >= 1``) take the full sort; the
    distribution sampled from is the same either way.
    """
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
    drawn = order.gather(-1, torch.multinomial(probs, 1, generator=generator)).squeeze(-1)
    wide = sampling & ~inside
    if bool(wide.any()):
        rows = wide.nonzero().squeeze(-1)
        drawn[rows] = _nucleus_full(scaled[rows], top_p[rows], generator)
    return torch.where(sampling, drawn, greedy)


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer whose keys/values are views into buffers with spare rows and positions.

    ``DynamicLayer`` appends with ``torch.cat``, copying the whole cache at every step (a third of
    a decoding step at batch 32). Here a new token is written in place; admitted requests are
    written into spare rows (``add_rows``) and finished ones replaced by the last rows
    (``keep_rows``), so nothing in flight is copied; the buffers are reallocated only when their
    positions run out (growing by half) or a new prompt is longer than the cache.
    """

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


@torch.inference_mode()
def decode_stream(model, tokenizer, requests: list[Request], *, batch_size: int = 16,
                  max_new_tokens: int = 256, generator: torch.Generator | None = None,
                  max_prompt_tokens: int | None = None, on_step=None, on_done=None
                  ) -> list[Completion]:
    """Continuous batching for causal models: decode ``requests`` with at most ``batch_size``
    sequences in flight, admitting new requests as soon as a quarter of the slots are free.

    Finished sequences leave the batch at once (their KV-cache rows are dropped); admitted ones
    are prefilled together, left-padded to the running cache's length and joined to it, so the
    batch stays full instead of waiting for its longest sequence. Requests are admitted in order;
    requests with the same prompt as a recent one reuse its prefill (a problem's n samples cost
    one prompt forward, not n).
    ``on_done(i, completion)`` is called as request ``i`` finishes; ``on_step(n_active)`` after
    every decoding step. Returns the completions in request order.
    """
    if not supports_streaming(model):
        raise ValueError(f"decode_stream: {type(model).__name__} has attention layers other than full "
                         "attention (e.g. sliding windows) or is an encoder-decoder: use decode_batch")
    device = next(model.parameters()).device
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)
    tail = max([len(tokenizer.encode(s, add_special_tokens=False))
                for r in requests for s in r.stop] + [1]) + 2
    results: list[Completion | None] = [None] * len(requests)
    tokens: dict[int, list[int]] = {}
    logps: dict[int, list[float]] = {}
    rows: list[int] = []            # request index of each row in flight
    cache = mask = logits = None
    next_req = 0
    refill_at = batch_size - max(1, batch_size // 4)
    # prompt -> (keys per layer, values per layer, next-token logits) of its prefill, padding
    # stripped: the n samples of a problem share one prefill (the naive loop computes n)
    prefilled: OrderedDict[str, tuple[list, list, torch.Tensor]] = OrderedDict()

    def prefill(prompts: list[str]) -> None:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                        truncation=max_prompt_tokens is not None,
                        max_length=max_prompt_tokens).to(device)
        m = enc.attention_mask
        out = model(input_ids=enc.input_ids, attention_mask=m, logits_to_keep=1,
                    position_ids=(m.cumsum(-1) - 1).clamp(min=0), use_cache=True)
        c, lg = _cache_of(out), out.logits[:, -1, :].float()
        for b, p in enumerate(prompts):
            n = int(m[b].sum())
            prefilled[p] = ([layer.keys[b:b + 1, :, -n:].clone() for layer in c.layers],
                            [layer.values[b:b + 1, :, -n:].clone() for layer in c.layers],
                            lg[b:b + 1].clone())

    def admit(k: int):
        """Start up to ``k`` more requests: prefill their (new) prompts and join the batch."""
        nonlocal cache, mask, logits, next_req
        ids = list(range(next_req, min(next_req + k, len(requests))))
        next_req = ids[-1] + 1
        missing = list(dict.fromkeys(requests[i].prompt for i in ids
                                     if requests[i].prompt not in prefilled))
        if missing:
            prefill(missing)
        entries = [prefilled[requests[i].prompt] for i in ids]
        for i in ids:
            tokens[i], logps[i] = [], []
            prefilled.move_to_end(requests[i].prompt)
        lengths = [e[0][0].shape[2] for e in entries]
        runs = []  # (first, end, prefill) of each run of new requests sharing a prompt
        for j, e in enumerate(entries):
            if runs and runs[-1][2] is e:
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1, e])
        first = cache.layers[0] if cache is not None else None
        if first is None or first.free_rows < len(ids) or first.width < max(lengths):
            # a new cache: room for a full batch, as wide as the longest prompt; rows in flight first
            width = max(lengths + ([first.width] if first is not None else []))
            rows_max = max(batch_size, len(rows) + len(ids))
            layers = [_GrowingLayer(entries[0][0][l], entries[0][1][l], rows_max, width)
                      for l in range(len(entries[0][0]))]
            if first is not None:
                for layer, old in zip(layers, cache.layers):
                    layer.add_rows(old.keys, old.values, len(rows))
                mask = torch.nn.functional.pad(mask, (width - mask.shape[1], 0))
            cache = _GrowingCache(layers)
        for a, b, (ks, vs, _) in runs:  # written into spare rows; a prompt's samples broadcast
            for l, layer in enumerate(cache.layers):
                layer.add_rows(ks[l], vs[l], b - a)
        width = cache.layers[0].width
        new_mask = torch.zeros((len(ids), width), dtype=torch.long, device=device)
        for j, n in enumerate(lengths):
            new_mask[j, width - n:] = 1
        new_logits = torch.cat([e[2] for e in entries])
        mask = new_mask if mask is None else torch.cat([mask, new_mask])
        logits = new_logits if logits is None else torch.cat([logits, new_logits])
        rows.extend(ids)
        while len(prefilled) > 4:  # the prompts of the last few problems
            prefilled.popitem(last=False)

    while rows or next_req < len(requests):
        if next_req < len(requests) and len(rows) <= refill_at:
            admit(batch_size - len(rows))
        temp = torch.tensor([requests[r].temperature for r in rows], device=device)
        top_p = torch.tensor([requests[r].top_p for r in rows], device=device)
        nxt = _sample_rows(logits, temp, top_p, generator)
        chosen = logits.log_softmax(-1).gather(-1, nxt[:, None]).squeeze(-1).tolist()
        is_eos = torch.isin(nxt, eos).tolist()
        nxt_l = nxt.tolist()
        keep: list[int] = []
        for j, r in enumerate(rows):
            tokens[r].append(nxt_l[j])
            logps[r].append(chosen[j])
            finish = None
            if is_eos[j]:
                finish = "eos"
            elif requests[r].stop and any(s in tokenizer.decode(tokens[r][-tail:], skip_special_tokens=True)
                                          for s in requests[r].stop):
                finish = "stop"
            elif len(tokens[r]) >= max_new_tokens:
                finish = "length"
            if finish is None:
                keep.append(j)
                continue
            ids = tokens.pop(r)
            text_ids = ids[:-1] if finish == "eos" else ids
            results[r] = Completion(text=tokenizer.decode(text_ids, skip_special_tokens=True),
                                    token_ids=ids, logprob=float(sum(logps.pop(r))), finish=finish)
            if on_done is not None:
                on_done(r, results[r])
        if on_step is not None:
            on_step(len(rows))
        if len(keep) < len(rows):
            order = _compaction(keep)
            rows[:] = [rows[j] for j in order]
            if not rows:
                cache = mask = logits = None
                continue
            for layer in cache.layers:
                layer.keep_rows(order)
            idx = torch.tensor(order, dtype=torch.long, device=device)
            nxt, mask = nxt[idx], mask[idx]
            lead = int(mask.any(0).float().argmax())  # columns that are padding in every row
            if lead:
                mask = mask[:, lead:]
                for layer in cache.layers:
                    layer.trim_left(lead)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        out = model(input_ids=nxt[:, None], attention_mask=mask,
                    position_ids=mask.sum(-1, keepdim=True) - 1, cache=cache, use_cache=True)
        cache, logits = _cache_of(out), out.logits[:, -1, :].float()
    return results  # type: ignore[return-value]
