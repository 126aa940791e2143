"""Batched decoding (left padding, stop strings, row eviction) and the resumable generate stage."""

from __future__ import annotations

import json

import pytest
import torch

from coderl.generation import GenerationConfig, Sample, decode_batch, generate, read_samples
from coderl.io import RecordError
from coderl.models import load_model

from conftest import DEVICE

PROMPTS = ["def add(a, b):\n", "Write a python function to find the sum of a list of numbers.\n",
           "import sys\n"]


@pytest.fixture(scope="module")
def causal(tiny_causal_dir):
    return load_model(str(tiny_causal_dir), device=DEVICE)


@pytest.fixture(scope="module")
def t5(tiny_t5_dir):
    return load_model(str(tiny_t5_dir), device=DEVICE)


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
