"""Batched decoding (left padding, stop strings, row eviction), generation in memory (continuing
prefixes) and the resumable generate stage."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from coderl.generation import (GenerationConfig, GenRequest, RequestError, Sample, decode_batch,
                               generate, generate_samples, read_samples)
from coderl.io import RecordError
from coderl.models import build_prompt, load_model
from coderl.models.resolve import LoadedModel

from conftest import DEVICE

PROMPTS = ["def add(a, b):\n", "Write a python function to find the sum of a list of numbers.\n",
           "import sys\n"]


@pytest.fixture(scope="module")
def causal(tiny_causal_dir):
    return load_model(str(tiny_causal_dir), device=DEVICE)


@pytest.fixture(scope="module")
def t5(tiny_t5_dir):
    return load_model(str(tiny_t5_dir), device=DEVICE)


def _lively(lm, seed: int, **init) -> LoadedModel:
    config = copy.deepcopy(lm.model.config)
    for k, v in init.items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    model = type(lm.model)(config).eval().to(DEVICE)
    return dataclasses.replace(lm, model=model, spec=f"{lm.spec}-lively")


@pytest.fixture(scope="module")
def lively(causal):
    """The tiny Llama with larger random weights: its greedy text changes with its context (the
    0.02-initialised one repeats one token whatever it reads), so a prefix continued wrong shows."""
    return _lively(causal, 1, initializer_range=0.3)


@pytest.fixture(scope="module")
def lively_t5(t5):
    return _lively(t5, 0, initializer_factor=20.0)


def _hf_greedy(lm, prompts, n):
    enc = lm.tokenizer(prompts, return_tensors="pt", padding=True,
                       add_special_tokens=lm.is_encoder_decoder).to(DEVICE)
    out = lm.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    start = 1 if lm.is_encoder_decoder else enc.input_ids.shape[1]
    return [row[start:].tolist() for row in out]


@pytest.mark.parametrize("which", ["causal", "t5"])
def test_greedy_matches_transformers_generate(which, request):
    lm = request.getfixturevalue(which)
    mine = decode_batch(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=12,
                        is_encoder_decoder=lm.is_encoder_decoder)
    ref = _hf_greedy(lm, PROMPTS, 12)
    for m, r in zip(mine, ref):  # left padding must not change any row's tokens
        assert m.token_ids == r[:len(m.token_ids)]
        assert m.logprob <= 0 and m.num_tokens == len(m.token_ids)


def test_stop_strings_end_each_sequence_early(causal):
    free = decode_batch(causal.model, causal.tokenizer, PROMPTS, max_new_tokens=20)
    assert all(c.finish == "length" and c.num_tokens == 20 for c in free)
    # a stop string taken from the middle of row 0's greedy text stops that row only
    text0 = causal.tokenizer.decode(free[0].token_ids[:8], skip_special_tokens=True)
    stop = text0[-3:]
    stopped = decode_batch(causal.model, causal.tokenizer, PROMPTS, max_new_tokens=20,
                           stop=[[stop], [], []])
    assert stopped[0].finish == "stop" and stopped[0].num_tokens <= 8 and stop in stopped[0].text
    assert stopped[0].token_ids == free[0].token_ids[:stopped[0].num_tokens]
    for a, b in zip(stopped[1:], free[1:]):  # the other rows are untouched by the eviction
        assert a.token_ids == b.token_ids and a.finish == "length"


def test_sampling_is_seeded(causal):
    run = lambda seed: [c.token_ids for c in decode_batch(
        causal.model, causal.tokenizer, PROMPTS, max_new_tokens=10, temperature=0.8, top_p=0.9,
        generator=torch.Generator(device=DEVICE).manual_seed(seed))]
    assert run(1) == run(1) and run(1) != run(2)


def test_seeded_draws_are_inverse_transform_samples():
    """uniforms() is a pure function of (seed, step), in (0, 1); a row's draw with uniform u is the
    first token whose cumulative probability reaches u: evenly spaced u's hit each token of the
    nucleus in proportion to its (renormalized) probability, and none outside it."""
    from coderl.generation.decode import _sample_rows, uniforms

    u = uniforms(list(range(4000)), [3] * 4000)
    assert u == uniforms(list(range(4000)), [3] * 4000) and u != uniforms(list(range(4000)), [4] * 4000)
    assert all(0 < x < 1 for x in u) and abs(sum(u) / len(u) - 0.5) < 0.02 and len(set(u)) == 4000
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(1000, 1)
    grid = (torch.arange(1000) + 0.5) / 1000
    for top_p, want in ((1.0, [500, 300, 150, 50]), (0.7, [625, 375, 0, 0])):
        draws = _sample_rows(logits, torch.ones(1000), torch.full((1000,), top_p), None, grid)
        assert torch.bincount(draws, minlength=4).tolist() == want


@pytest.mark.parametrize("which,temperature", [("lively", 1.0), ("lively_t5", 30.0)])
def test_a_sample_depends_on_its_seed_not_on_its_batch_or_order(which, temperature, request, mbpp_problems):
    """The same request gives the same program at batch size 2 or 7, first or last in the
    list; another run seed gives others (the T5's distributions are peaked: a high temperature)."""
    lm = request.getfixturevalue(which)
    reqs = [GenRequest(p, i) for p in mbpp_problems for i in range(3)]
    run = lambda rs, **kw: {s.key: (s.raw, s.logprob) for s in generate_samples(
        lm, rs, GenerationConfig(max_new_tokens=8, progress=False, temperature=temperature, **kw))}
    a = run(reqs, batch_size=2)
    for other in (run(reqs[::-1], batch_size=7), run(reqs[4:], batch_size=3) | run(reqs[:4], batch_size=1)):
        assert {k: v[0] for k, v in other.items()} == {k: v[0] for k, v in a.items()}
        assert all(abs(other[k][1] - a[k][1]) < 1e-3 for k in a)  # padding moves the last bits
    b = run(reqs, batch_size=2, seed=1)
    assert sum(a[k][0] != b[k][0] for k in a) >= len(a) // 2


def test_top_p_keeps_the_nucleus_only():
    from coderl.generation.decode import _sample_next

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(_sample_next(logits, 1.0, 0.8, g)) for _ in range(200)}
    assert draws == {0, 1}


def test_top_p_nucleus_wider_than_the_fast_path():
    """The nucleus is looked for among the TOP_K_FAST most likely tokens first; a row whose
    nucleus is wider falls back to the full sort, in the same batch as a narrow row."""
    from coderl.generation.decode import TOP_K_FAST, _sample_rows

    vocab = 4 * TOP_K_FAST
    logits = torch.stack([-torch.arange(vocab) * 1e-3, -torch.arange(vocab) * 1.0])
    probs = logits[0].softmax(-1)
    nucleus = int(((probs.cumsum(-1) - probs) <= 0.5).sum())  # row 0: ~2 x TOP_K_FAST tokens
    assert nucleus > TOP_K_FAST
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([_sample_rows(logits, torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]), g)
                         for _ in range(300)])
    assert TOP_K_FAST <= int(draws[:, 0].max()) < nucleus  # the whole nucleus, nothing beyond
    assert draws[:, 1].tolist() == [0] * 300  # row 1: token 0 alone holds 63% of the mass


def test_generate_stage_records_and_resume(causal, mbpp_problems, tmp_path):
    cfg = GenerationConfig(num_seqs=2, greedy=True, batch_size=4, max_new_tokens=8, progress=False)
    out = tmp_path / "samples.jsonl"
    summary = generate(mbpp_problems, out, cfg, model=causal)
    samples = read_samples(out)
    assert summary["sequences"] == len(samples) == 9
    for p in mbpp_problems:
        mine = sorted((s.index, s.origin) for s in samples if s.problem_id == p.id)
        assert mine == [(0, "sampled"), (1, "sampled"), (2, "greedy")]
    s = samples[0]
    assert s.prompt and s.raw is not None and s.logprob <= 0 and 0 < s.num_tokens <= 8
    assert s.finish in ("stop", "eos", "length")

    # the same config and seed reproduce the samples
    again = tmp_path / "again.jsonl"
    generate(mbpp_problems, again, cfg, model=causal)
    key = lambda x: (x.problem_id, x.index)
    assert [x.raw for x in sorted(read_samples(again), key=key)] == [x.raw for x in sorted(samples, key=key)]

    # a killed run: four samples written (in the order they finished), the fifth torn mid-line
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:20])
    kept = [json.loads(l) for l in lines[:4]]
    complete = sum(all({"problem_id": p.id, "index": i} in [{k: r[k] for k in ("problem_id", "index")}
                                                             for r in kept] for i in range(3))
                   for p in mbpp_problems)
    summary = generate(mbpp_problems, out, cfg, model=causal)
    assert summary["sequences"] == 5 and summary["skipped_done"] == complete
    assert out.read_text().splitlines(keepends=True)[:4] == lines[:4]
    resumed = sorted(map(key, read_samples(out)))
    assert resumed == sorted(map(key, samples)) and len(set(resumed)) == len(resumed)
    # each sample draws its own noise: the resumed run holds the uninterrupted run's samples
    assert [x.raw for x in sorted(read_samples(out), key=key)] == [x.raw for x in sorted(samples, key=key)]
    assert generate(mbpp_problems, out, cfg, model=causal)["sequences"] == 0  # all done


def test_generate_with_t5(t5, mbpp_problems, tmp_path):
    cfg = GenerationConfig(num_seqs=1, greedy=True, max_new_tokens=6, progress=False)
    generate(mbpp_problems[:2], tmp_path / "s.jsonl", cfg, model=t5)
    samples = read_samples(tmp_path / "s.jsonl")
    assert len(samples) == 4 and all("QUESTION" not in s.prompt for s in samples)


def test_bad_config_and_records(tmp_path):
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=0).validate()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem_id": "x", "index": 0}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:1: .*program"):
        read_samples(bad)
    bad.write_text(json.dumps(Sample("x", 0, "pass", origin="weird").to_dict()) + "\n")
    with pytest.raises(RecordError, match="origin"):
        read_samples(bad)


def test_continuous_batching_matches_static_batches(causal):
    """decode_stream admits new requests as others finish (cache rows merged with left padding):
    greedy tokens must equal those of one static batch with the same stop strings."""
    from coderl.generation.decode import Request, decode_stream

    tok = causal.tokenizer
    # repeated prompts, adjacent ones too (a problem's samples share one prefill, copied into
    # several rows at once)
    prompts = PROMPTS * 4 + ["class Solution:\n    def f(self):"] * 3 + ["x"]
    free = decode_batch(causal.model, tok, prompts, max_new_tokens=14)
    # stop strings from each row's own text make the lengths differ (rows leave at 2..14 tokens)
    stops = [[tok.decode(c.token_ids[:2 + i % 9], skip_special_tokens=True)[-2:]] if i % 3 else []
             for i, c in enumerate(free)]
    ref = decode_batch(causal.model, tok, prompts, stop=stops, max_new_tokens=14)
    done = []
    got = decode_stream(causal.model, tok, [Request(p, s) for p, s in zip(prompts, stops)],
                        batch_size=4, max_new_tokens=14, on_done=lambda i, c: done.append(i))
    assert [c.token_ids for c in got] == [c.token_ids for c in ref]
    assert [c.finish for c in got] == [c.finish for c in ref]
    assert sorted(done) == list(range(len(prompts)))  # each reported once, as it finished
    for a, b in zip(got, ref):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)


def test_sliding_window_models_decode_in_static_batches(causal, mbpp_problems, tmp_path):
    """decode_stream keeps its own full-attention KV cache: a model with sliding-window layers is
    refused there and the generate stage decodes it with decode_batch (transformers' own cache)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from coderl.generation.decode import Request, decode_stream, supports_streaming
    from coderl.models.resolve import LoadedModel

    tok = causal.tokenizer
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = Gemma3ForCausalLM(cfg).eval().to(DEVICE)
    assert supports_streaming(causal.model) and not supports_streaming(model)
    with pytest.raises(ValueError, match="sliding windows"):
        decode_stream(model, tok, [Request("def add(a, b):\n", [])], max_new_tokens=4)
    lm = LoadedModel(model=model, tokenizer=tok, spec="tiny-gemma3", path=causal.path, is_encoder_decoder=False)
    generate(mbpp_problems[:2], tmp_path / "s.jsonl",
             GenerationConfig(num_seqs=2, max_new_tokens=12, progress=False), model=lm)
    samples = read_samples(tmp_path / "s.jsonl")
    assert len(samples) == 6 and all(0 < s.num_tokens <= 12 for s in samples)


def test_stream_cache_grows_past_its_spare_room(causal):
    """Sequences longer than the cache's spare room (64 positions) move to bigger buffers while
    other rows leave and new ones join: tokens still equal those of one static batch."""
    from coderl.generation.decode import Request, _GrowingLayer, decode_stream

    tok = causal.tokenizer
    n = _GrowingLayer.SPARE + 16
    free = decode_batch(causal.model, tok, PROMPTS, max_new_tokens=n)
    stops = [[tok.decode(free[0].token_ids[:10], skip_special_tokens=True)[-2:]], [], []]
    ref = decode_batch(causal.model, tok, PROMPTS, stop=stops, max_new_tokens=n)
    got = decode_stream(causal.model, tok, [Request(p, s) for p, s in zip(PROMPTS, stops)],
                        batch_size=2, max_new_tokens=n)
    assert ref[0].num_tokens <= 10 and ref[1].num_tokens == n
    assert [c.token_ids for c in got] == [c.token_ids for c in ref]


def test_growing_layer_keeps_its_buffers_in_step_with_its_views():
    """The cache layer's keys/values are views of its buffers: selecting rows through the generic
    Cache API (``batch_select_indices``) and the decoder's own moves (``keep_rows``, ``trim_left``)
    must keep later writes landing in the rows and positions the views show."""
    from coderl.generation.decode import _GrowingLayer

    k = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 1, 3, 1)
    layer = _GrowingLayer(k, k.clone(), max_rows=4, width=3)
    layer.add_rows(k, k.clone(), 4)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert layer.keys[:, 0, :, 0].tolist() == [[6, 7, 8], [0, 1, 2]]
    new = torch.tensor([[[[100.0]]], [[[200.0]]]])
    keys, values = layer.update(new, new.clone())
    assert keys[:, 0, :, 0].tolist() == [[6, 7, 8, 100], [0, 1, 2, 200]] and values.shape == keys.shape
    layer.keep_rows([1])
    layer.trim_left(2)
    assert layer.keys[:, 0, :, 0].tolist() == [[2, 200]] and layer.get_seq_length() == 2


# -- generation in memory: generate_samples, continuing prefixes ---------------------------------

@pytest.mark.parametrize("which", ["causal", "t5"])
def test_in_memory_samples_are_the_stage_samples(which, request, mbpp_problems, tmp_path):
    """The generate stage writes what generate_samples returns for its requests (each problem's
    greedy program first), in the order they finish."""
    lm = request.getfixturevalue(which)
    cfg = GenerationConfig(num_seqs=2, greedy=True, batch_size=3, max_new_tokens=10, progress=False)
    generate(mbpp_problems, tmp_path / "s.jsonl", cfg, model=lm)
    written = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    plan = ((2, "greedy"), (0, "sampled"), (1, "sampled"))
    reqs = [GenRequest(p, i, o) for p in mbpp_problems for i, o in plan]
    finished: list[Sample] = []
    samples = generate_samples(lm, reqs, cfg, on_sample=finished.append)
    assert [s.to_dict() for s in finished] == written and len(written) == 9
    assert [s.key for s in samples] == [r.key for r in reqs]  # returned in request order


def _cuts(lm, prompt: str, ids: list[int]) -> list[int]:
    """The k whose text ``decode(ids[:k])`` tokenizes back to ``ids[:k]`` where a prefix is read
    (after the prompt for a causal model, alone in an encoder-decoder's decoder)."""
    tok = lm.tokenizer
    before = "" if lm.is_encoder_decoder else prompt
    head = tok(before, add_special_tokens=False).input_ids
    return [k for k in range(1, len(ids))
            if tok(before + tok.decode(ids[:k]), add_special_tokens=False).input_ids == head + ids[:k]]


def _token_logprobs(lm, prompt: str, ids: list[int]) -> list[float]:
    """The model's log-probability of each of ``ids`` after ``prompt``: one forward pass over the
    whole sequence (no cache, no padding)."""
    enc = lm.tokenizer(prompt, return_tensors="pt",
                       add_special_tokens=lm.is_encoder_decoder).input_ids.to(DEVICE)
    seq = torch.tensor([ids], device=DEVICE)
    with torch.no_grad():
        if lm.is_encoder_decoder:
            start = torch.full((1, 1), lm.model.config.decoder_start_token_id, device=DEVICE)
            logits = lm.model(input_ids=enc, decoder_input_ids=torch.cat([start, seq], 1)).logits[0, :-1]
        else:
            logits = lm.model(input_ids=torch.cat([enc, seq], 1)).logits[0, enc.shape[1] - 1:-1]
    return logits.float().log_softmax(-1).gather(-1, seq[0, :, None]).squeeze(-1).tolist()


@pytest.mark.parametrize("which,path", [("lively", "stream"), ("lively", "static"), ("lively_t5", "static")])
def test_greedy_continuation_of_a_greedy_prefix_is_the_rest_of_it(which, path, request, mbpp_problems,
                                                                  monkeypatch):
    """Greedy programs cut after k tokens (wherever the text of those tokens tokenizes back to
    them), continued greedily for M tokens: each continuation is tokens k..k+M of its program, so
    prompt + prefix was read as the program's own first k tokens were. Prefixes of several lengths
    decode together (left-padded); num_tokens and logprob count the continuation only."""
    import coderl.generation.core as core

    if path == "static":  # as a sliding-window model would (decode_batch)
        monkeypatch.setattr(core, "supports_streaming", lambda model: False)
    lm, m = request.getfixturevalue(which), 6
    tok = lm.tokenizer
    prompts = [build_prompt(p, tok, "auto", lm.is_encoder_decoder).text for p in mbpp_problems]
    ref = decode_batch(lm.model, tok, prompts, max_new_tokens=24, is_encoder_decoder=lm.is_encoder_decoder)
    reqs, want = [], []
    for p, prompt, c in zip(mbpp_problems, prompts, ref):
        assert c.finish == "length"
        for k in _cuts(lm, prompt, c.token_ids[:24 - m]):
            ids = c.token_ids[:k + m]
            reqs.append(GenRequest(p, k, "greedy", prefix=tok.decode(ids[:k]), meta={"parent": 0}))
            raw = tok.decode(ids[:k]) + tok.decode(ids[k:], skip_special_tokens=True)
            want.append((raw, sum(_token_logprobs(lm, prompt, ids)[k:])))
    assert len(reqs) >= 4 and len({len(r.prefix) for r in reqs}) >= 3
    cfg = GenerationConfig(num_seqs=0, max_new_tokens=m, batch_size=4, progress=False)
    for s, r, (raw, logprob) in zip(generate_samples(lm, reqs, cfg), reqs, want):
        assert s.raw == raw and s.raw.startswith(r.prefix) and s.num_tokens == m
        assert s.logprob == pytest.approx(logprob, abs=1e-3)
        assert s.meta == {"parent": 0, "prefix_chars": len(r.prefix)} and s.prompt == build_prompt(
            r.problem, tok, "auto", lm.is_encoder_decoder).text


def test_continuations_of_one_prefix_share_one_prefill(lively, mbpp_problems):
    """Three samples continuing each of two prefixes: one forward pass reads the prompt with each
    prefix (two rows), not six, and every other forward call feeds one token per sequence."""
    tok, p = lively.tokenizer, mbpp_problems[0]
    prompt = build_prompt(p, tok, "auto").text
    prefixes = ["def remove_Occ(s, ch):\n", "def remove_Occ(s, ch):\n    return s"]
    reqs = [GenRequest(p, 3 * j + i, prefix=x) for j, x in enumerate(prefixes) for i in range(3)]
    calls: list[tuple[int, int]] = []
    hook = lively.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        samples = generate_samples(lively, reqs, GenerationConfig(num_seqs=3, max_new_tokens=5, batch_size=8,
                                                                  progress=False))
    finally:
        hook.remove()
    longest = max(len(tok(prompt + x, add_special_tokens=False).input_ids) for x in prefixes)
    assert calls[0] == (2, longest) and all(width == 1 for _, width in calls[1:])
    assert [s.meta["prefix_chars"] for s in samples] == [len(r.prefix) for r in reqs]
    assert all(s.raw.startswith(r.prefix) and 0 < s.num_tokens <= 5 for s, r in zip(samples, reqs))


def test_stop_strings_count_in_the_continuation_only(lively, mbpp_problems):
    """A stop string inside the prefix does not end its continuation; one that starts in the
    prefix and ends in the continuation does, as it would have without a prefix."""
    p, prefix = mbpp_problems[0], "def f(x):\n    return x\n"
    cfg = GenerationConfig(num_seqs=0, max_new_tokens=12, progress=False)
    run = lambda stop: generate_samples(lively, [GenRequest(p, 0, "greedy", prefix=prefix)],
                                        dataclasses.replace(cfg, stop=stop))[0]
    free = run([])
    cont = free.raw[len(prefix):]
    assert free.finish == "length" and "return" not in cont
    inside = run(["return"])
    assert inside.finish == "length" and inside.raw == free.raw
    across = prefix[-2:] + cont[:2]
    assert across not in prefix
    stopped = run([across])
    assert stopped.finish == "stop" and stopped.num_tokens < free.num_tokens
    assert free.raw.startswith(stopped.raw) and len(stopped.raw) >= len(prefix) + 2


@pytest.mark.parametrize("which", ["causal", "t5"])
def test_a_request_settings_override_its_origin(which, request, mbpp_problems):
    """Requests decode with their origin's settings (greedy: temperature 0) unless they carry
    their own: a sampled request at temperature 0 is the greedy program."""
    lm, p = request.getfixturevalue(which), mbpp_problems[1]
    cfg = GenerationConfig(num_seqs=1, max_new_tokens=8, progress=False)
    reqs = [GenRequest(p, 1, "greedy"), GenRequest(p, 0, temperature=0.0)]
    greedy, sampled = generate_samples(lm, reqs, cfg)
    assert sampled.raw == greedy.raw and sampled.origin == "sampled"


def test_bad_requests_are_refused_before_decoding(lively, mbpp_problems):
    p = mbpp_problems[0]
    for bad, match in (({"index": -1}, "index must be an int >= 0"),
                       ({"origin": "gold"}, "not a generated origin"),
                       ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p")):
        with pytest.raises(RequestError, match=match):
            GenRequest(**{"problem": p, "index": 0, **bad})
    assert issubclass(RequestError, ValueError)
    cfg = GenerationConfig(num_seqs=1, max_new_tokens=4, max_prompt_tokens=16, progress=False)
    got: list[Sample] = []
    # without a prefix a long prompt keeps its end, as ever; a prefix after a cut prompt is refused
    too_long = r"request 1 .*prompt has \d+ tokens, more than max_prompt_tokens \(16\)"
    with pytest.raises(RequestError, match=too_long):
        generate_samples(lively, [GenRequest(p, 0), GenRequest(p, 1, prefix="def f(")], cfg,
                         on_sample=got.append)
    with pytest.raises(RequestError, match="requests 0 and 1 are both for"):
        generate_samples(lively, [GenRequest(p, 0), GenRequest(p, 0, "refined")], cfg, on_sample=got.append)
    assert got == [] and generate_samples(lively, [GenRequest(p, 0)], cfg)[0].num_tokens > 0
