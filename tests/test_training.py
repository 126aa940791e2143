"""Actor training (coderl.training) on tiny models: the training examples reproduce generation's
format, the SFT and RL losses, the return and the alternation schedule, resume after a kill to the
same weights, saved models that load_model reads, and bad input."""

from __future__ import annotations

import dataclasses

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from coderl.config import ConfigError, fingerprint
from coderl.io import RecordError
from coderl.records import program_hash
from coderl.models import build_prompt, extract_program, load_model
from coderl.problems import load_problems
from coderl.training import RLConfig, SFTConfig, TrainingError, train_rl, train_sft
from coderl.training import losses, objective
from coderl.training.batches import FixedBatches
from coderl.training.checkpoint import STATE_FILE, list_checkpoints
from coderl.training.data import Example, build_gold_examples, build_rl_examples, gold_continuation
from coderl.training.engine import LOG_FILE, METRICS_FILE
from coderl.training.objective import align_weights, schedule, step_kind
from coderl.training.rewards import coderl_reward
from coderl.training.rl_trainer import RL_DIR
from coderl.training.sft_trainer import SFT_DIR

QUIET = dict(progress=False, val_source=None, save_every=0)


@pytest.fixture(scope="module")
def train_problems():
    return list(load_problems("mbpp", split="train", end=4))


@pytest.fixture(scope="module")
def val_problems():
    return list(load_problems("mbpp", split="validation", end=2))


@pytest.fixture(scope="module")
def chat(tiny_chat_dir):
    return load_model(str(tiny_chat_dir))


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _read_log(stage_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (stage_dir / LOG_FILE).read_text().splitlines() if l.strip()]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _sample_files(tmp: Path, problems, tokenizer, outcomes: dict[int, str], *, prompt_style="auto",
                  is_encoder_decoder=False) -> tuple[Path, Path]:
    """Per problem: samples 0 and 1 (their raw text: the gold continuation, or a broken one) and
    the greedy sample 2, with the given outcomes by index."""
    samples, results = [], []
    for p in problems:
        prompt = build_prompt(p, tokenizer, prompt_style, is_encoder_decoder)
        good = gold_continuation(p, prompt, p.solutions[0]) + "```"
        raws = {0: good, 1: "x)\n    return None\n```", 2: good}
        for i, raw in raws.items():
            samples.append({"problem_id": p.id, "index": i, "origin": "greedy" if i == 2 else "sampled",
                            "prompt": prompt.text, "raw": raw, "finish": "stop",
                            "program": extract_program(raw, prompt, p)})
            o = outcomes[i]
            results.append({"problem_id": p.id, "index": i, "outcome": o, "program_hash":
                            program_hash(samples[-1]["program"]),
                            "tests_passed": 3 if o == "passed" else 1, "tests_total": 3})
    tmp.mkdir(parents=True, exist_ok=True)
    return _write(tmp / "samples.jsonl", samples), _write(tmp / "results.jsonl", results)


# -- examples reproduce what generation sees ------------------------------------------------------

def test_gold_examples_reproduce_the_generation_format(chat, train_problems):
    tok = chat.tokenizer
    exs, counts = build_gold_examples(train_problems, tok, False)
    assert counts["examples"] == len(train_problems) == len(exs)
    for p, e in zip(train_problems, exs):
        prompt = build_prompt(p, tok, "auto", False)
        assert prompt.fenced and prompt.text.endswith(f"```python\ndef {p.entry_point}(")
        # the input: the prompt exactly as the decoder tokenizes it
        assert e.prompt_ids == tok(prompt.text, add_special_tokens=False).input_ids
        text = tok.decode(e.target_ids)
        assert text.endswith("\n```")  # the model learns to close the fence (and so to stop)
        program = extract_program(text, prompt, p)  # what generation would extract from it
        gold = p.solutions[0].replace("\r\n", "\n").strip()
        if gold.startswith(prompt.prefix):
            assert program.strip() == gold
        else:  # code before the function moved after it: the same definitions
            assert program.startswith(prompt.prefix)
            assert sorted(program.split()) == sorted(gold.split())


def test_code_before_the_function_is_moved_or_skipped(chat):
    p = next(p for p in load_problems("mbpp", split="train")
             if p.solutions[0].startswith("import math\ndef radian_degree"))
    prompt = build_prompt(p, chat.tokenizer, "auto", False)
    cont = gold_continuation(p, prompt, p.solutions[0], reorder=True)
    assert cont.startswith("degree):") and cont.rstrip().endswith("import math")
    ns: dict = {}
    exec(prompt.prefix + cont, ns)
    assert abs(ns["radian_degree"](90) - 1.5707963267948966) < 1e-9
    assert gold_continuation(p, prompt, p.solutions[0], reorder=False) is None
    _, counts = build_gold_examples([p], chat.tokenizer, False, reorder=False)
    assert counts.get("skipped_prefix_mismatch") == 1


# -- the losses -----------------------------------------------------------------------------------

def _ex(prompt, target, ret=0.0, weights=None):
    return Example("p", 0, "sample", list(prompt), list(target), weights, ret)


def test_sft_loss_ignores_prompt_and_padding(chat):
    model = chat.model
    a = _ex([5, 6, 7, 8, 9, 10, 11], [12, 13, 14])
    b = _ex([20, 21], [22, 23, 24, 25, 26, 27])
    pad = chat.tokenizer.pad_token_id
    with torch.no_grad():
        def loss(exs, pad_id=pad):
            batch = losses.collate(exs, pad_id=pad_id, is_encoder_decoder=False)
            return float(losses.sft_loss(losses.token_logprobs(model, batch), batch["target_mask"]))

        def reference(e):  # NLL of the target tokens from the unpadded sequence's full logits
            ids = torch.tensor([e.prompt_ids + e.target_ids])
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
            n = len(e.prompt_ids)
            return -sum(float(logp[n - 1 + t, tok]) for t, tok in enumerate(e.target_ids))

        alone = loss([a])
        assert alone == pytest.approx(reference(a) / 3, rel=1e-5)
        # batched with a longer row (padding in front of a): token-weighted mean of both rows
        both = loss([a, b])
        assert both == pytest.approx((reference(a) + reference(b)) / 9, rel=1e-5)
        # the pad id, the padding amount and the prompt tokens' labels do not enter the loss
        assert loss([a, b], pad_id=3) == pytest.approx(both, rel=1e-6)
        batch = losses.collate([a, b], pad_id=pad, is_encoder_decoder=False)
        lp = losses.token_logprobs(model, batch)
        mask = batch["target_mask"]
        noise = torch.where(mask, torch.zeros_like(lp), torch.randn_like(lp) * 100)
        assert float(losses.sft_loss(lp + noise, mask)) == pytest.approx(both, rel=1e-6)
        assert int(mask.sum()) == 9


def test_rl_loss_q_zero_tokens_contribute_nothing(chat):
    model = chat.model
    e = _ex([5, 6, 7], [8, 9, 10, 11], ret=1.3, weights=[1.0, 0.0, 0.5, 0.0])
    batch = losses.collate([e], pad_id=0, is_encoder_decoder=False)
    lp = losses.token_logprobs(model, batch).detach().requires_grad_(True)
    loss = objective.rl_loss(lp, batch["target_mask"], batch["returns"], batch["weights"])
    loss.backward()
    g = lp.grad[0, -4:]
    assert g[1] == 0 and g[3] == 0 and g[0] != 0 and g[2] != 0
    assert float(g[0]) == pytest.approx(-1.3 / 4) and float(g[2]) == pytest.approx(-1.3 * 0.5 / 4)
    # all q̂ = 0: no gradient reaches any weight
    model.zero_grad()
    z = _ex([5, 6, 7], [8, 9, 10, 11], ret=1.3, weights=[0.0] * 4)
    zb = losses.collate([z], pad_id=0, is_encoder_decoder=False)
    objective.rl_loss(losses.token_logprobs(model, zb), zb["target_mask"], zb["returns"], zb["weights"]).backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in model.parameters())
    model.zero_grad()


@pytest.mark.parametrize("ret", [1.3, -0.7])
def test_rl_step_moves_the_programs_log_probability_with_the_return_sign(tiny_chat_dir, ret):
    lm = load_model(str(tiny_chat_dir))
    model = lm.model.train()
    e = _ex([5, 6, 7, 8], [9, 10, 11, 12, 13], ret=ret)
    batch = losses.collate([e], pad_id=0, is_encoder_decoder=False)

    def logp() -> float:
        with torch.no_grad():
            return float(losses.token_logprobs(model, batch)[0].sum())

    before = logp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    objective.rl_loss(losses.token_logprobs(model, batch), batch["target_mask"], batch["returns"]).backward()
    opt.step()
    after = logp()
    assert (after > before) if ret > 0 else (after < before)


# -- returns --------------------------------------------------------------------------------------

def test_relative_return_is_zero_when_the_sample_equals_its_baseline(tmp_path, chat, train_problems):
    probs = train_problems[:2]
    s, r = _sample_files(tmp_path, probs, chat.tokenizer, {0: "passed", 1: "failed", 2: "passed"})
    reward = coderl_reward()
    kw = dict(reward=reward, skip_zero_return=False)
    data = build_rl_examples(probs, s, r, chat.tokenizer, False, **kw)
    by = {(e.problem_id, e.index): e for e in data.examples}
    assert len(by) == 4 and all(e.kind == "sample" and e.origin == "sampled" for e in data.examples)
    for p in probs:
        assert by[(p.id, 0)].ret == 0.0                           # passed vs greedy passed
        assert by[(p.id, 1)].ret == pytest.approx(-0.3 - 1.0)     # failed vs greedy passed
        assert by[(p.id, 0)].baseline == 1.0
    # dropped by default (no gradient from them)
    assert len(build_rl_examples(probs, s, r, chat.tokenizer, False, reward=reward).examples) == 2
    # no relative return: r(W^s); partial credit for the failed one (1 of 3 tests)
    plain = build_rl_examples(probs, s, r, chat.tokenizer, False, reward=coderl_reward(partial_credit=True),
                              relative=False)
    rets = sorted(e.ret for e in plain.examples)
    assert rets[0] == pytest.approx(-0.3 + 1.3 / 3) and rets[-1] == 1.0
    # a problem without a greedy program: r(W^b) = 0
    for f in (s, r):
        lines = [l for l in f.read_text().splitlines() if json.loads(l)["index"] != 2]
        f.write_text("\n".join(lines) + "\n")
    nob = build_rl_examples(probs, s, r, chat.tokenizer, False, **kw)
    assert sorted(e.ret for e in nob.examples) == pytest.approx([-0.3, -0.3, 1.0, 1.0])
    assert nob.stats["without_baseline"] == 4



def test_a_mean_baseline_centres_each_problems_returns(tmp_path, chat, train_problems):
    """rl.baseline: mean: r(W^b) is the mean reward of the problem's trained samples (not its
    greedy program's), so a problem's returns sum to zero; the greedy program is not needed."""
    probs = train_problems[:2]
    s, r = _sample_files(tmp_path, probs, chat.tokenizer, {0: "passed", 1: "runtime_error", 2: "passed"})
    data = build_rl_examples(probs, s, r, chat.tokenizer, False, reward=coderl_reward(), baseline_kind="mean")
    by = {(e.problem_id, e.index): e for e in data.examples}
    for p in probs:  # rewards 1.0 and -0.6: baseline 0.2 (the greedy program's 1.0 would give 0 and -1.6)
        assert by[(p.id, 0)].baseline == pytest.approx(0.2)
        assert by[(p.id, 0)].ret == pytest.approx(0.8) and by[(p.id, 1)].ret == pytest.approx(-0.8)
    assert RLConfig(baseline="mean").baseline == "mean"
    with pytest.raises(ConfigError, match="rl.baseline"):
        RLConfig(baseline="median")


def test_rl_trajectory_is_prompt_plus_raw_tokens(tmp_path, chat, train_problems):
    probs = train_problems[:1]
    s, r = _sample_files(tmp_path, probs, chat.tokenizer, {0: "passed", 1: "failed", 2: "failed"})
    data = build_rl_examples(probs, s, r, chat.tokenizer, False, reward=coderl_reward())
    sample = json.loads(s.read_text().splitlines()[0])
    e = next(e for e in data.examples if e.index == 0)
    assert e.prompt_ids == chat.tokenizer(sample["prompt"], add_special_tokens=False).input_ids
    assert chat.tokenizer.decode(e.target_ids) == sample["raw"]


def test_critic_values_align_onto_the_sampled_tokens(chat):
    program = "def f(x):\n    return x\n"
    raw = "x):\n    return x\n```"
    # critic tokens: "def f(" -> 0.1, "x):\n" -> 0.2, "    return x\n" -> 0.9
    offsets = np.array([[0, 6], [6, 10], [10, 23]])
    q = np.array([0.1, 0.2, 0.9])
    enc = chat.tokenizer(raw, add_special_tokens=False, return_offsets_mapping=True)
    w = align_weights(raw, enc.offset_mapping, program, q, offsets, len(enc.input_ids) + 1)
    for (a, b), v in zip(enc.offset_mapping, w):
        if b <= 4:
            assert v == pytest.approx(0.2)
        elif a >= 4 and b <= 17:
            assert v == pytest.approx(0.9)
    assert w[-1] == pytest.approx(0.9) and w[-2] == pytest.approx(0.9)  # fence, end token: carried


# -- the schedule ---------------------------------------------------------------------------------

def test_alternation_schedule():
    assert schedule(3, 1) == ["rl", "ce", "rl", "ce", "rl", "ce"]
    assert schedule(5, 2) == ["rl", "rl", "ce", "rl", "rl", "ce", "rl"]
    assert schedule(3, 0) == ["rl"] * 3
    assert [step_kind(s, 3) for s in range(8)] == ["rl", "rl", "rl", "ce"] * 2


# -- where batches come from ----------------------------------------------------------------------

def test_fixed_batches_plan_is_a_function_of_the_seed_and_the_step():
    src = FixedBatches({"rl": list("abcde"), "ce": list("XYZ")}, epochs=2, batch_size=2, seed=3,
                       kinds=lambda n: schedule(n, 1))
    src.bind(2)  # 5 samples in micro-batches of 2: 3 per epoch, 2 per step -> 3 RL steps
    assert len(src) == 6 and [src.step(s).kind for s in range(6)] == ["rl", "ce"] * 3

    def micro(items, seed, k):  # micro-batch k: a slice of epoch k // per_epoch's seeded permutation
        epoch, pos = divmod(k, -(-len(items) // 2))
        perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        return [items[i] for i in perm.tolist()[pos * 2:pos * 2 + 2]]

    for s, j in ((0, 0), (2, 1), (4, 2)):  # the j-th RL step reads micro-batches 2j, 2j + 1
        assert src.step(s).micro_batches == [micro(list("abcde"), 3, 2 * j), micro(list("abcde"), 3, 2 * j + 1)]
    assert src.step(3).micro_batches == [micro(list("XYZ"), 3 + 7919, 2), micro(list("XYZ"), 3 + 7919, 3)]
    assert [s for s in range(6) if src.ends_epoch(s)] == [2, 4]  # step 2 reads epoch 0's last batch
    # the critic's grouping: steps within an epoch, its last step with what is left
    within = FixedBatches({"c": list(range(5))}, epochs=2, batch_size=2, seed=3, cross_epochs=False)
    within.bind(2)
    assert len(within) == 4 and [len(within.step(s).micro_batches) for s in range(4)] == [2, 1, 2, 1]
    assert [s for s in range(4) if within.ends_epoch(s)] == [1, 3]
    assert within.step(2).micro_batches == [micro(list(range(5)), 3, 3), micro(list(range(5)), 3, 4)]


def test_the_trainer_asks_for_a_step_only_after_the_previous_update(tmp_path, tiny_chat_dir, train_problems,
                                                                   monkeypatch):
    """What a round-by-round source relies on: step s is planned after step s - 1's update."""
    events, real = [], FixedBatches.step

    def step(self, s):
        events.append(("plan", s))
        return real(self, s)

    monkeypatch.setattr(FixedBatches, "step", step)
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=1, grad_accum=1, **QUIET)
    train_sft(train_problems[:3], tmp_path, cfg, on_step=lambda s: events.append(("done", s)),
              echo=lambda *_: None)
    assert events == [("plan", 0), ("done", 1), ("plan", 1), ("done", 2), ("plan", 2), ("done", 3)]


# -- the stages end to end ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_chat_dir, train_problems, val_problems):
    run = tmp_path_factory.mktemp("sft_run")
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=2, grad_accum=1, progress=False,
                    val_source=None)
    summary = train_sft(train_problems, run, cfg, val_problems=val_problems, echo=lambda *_: None)
    return run, summary


def test_sft_writes_a_loadable_adapter_and_logs(sft_run, tiny_chat_dir):
    run, summary = sft_run
    out = run / SFT_DIR
    assert summary["complete"] and summary["steps"] == 2 and summary["steps_by_kind"] == {"ce": 2}
    assert summary["best"]["step"] == 2 and summary["history"][0]["step"] == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(Path(tiny_chat_dir).resolve())
    lm = load_model(str(out))
    assert type(lm.model).__name__ == "LlamaForCausalLM"  # merged
    events = [r["event"] for r in _read_log(out)]
    assert events[0] == "start" and events.count("step") == 2 and events[-1] == "done"
    assert any((out / "tb").iterdir()) and json.loads((out / METRICS_FILE).read_text())["complete"]
    # a rerun of a complete stage returns its summary without training
    again = train_sft(list(load_problems("mbpp", split="train", end=4)), run,
                      SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=2, grad_accum=1,
                                progress=False, val_source=None),
                      val_problems=list(load_problems("mbpp", split="validation", end=2)),
                      echo=lambda *_: None)
    assert again["steps"] == 2


def test_rl_from_sft_alternates_and_loads(tmp_path, sft_run, train_problems, val_problems):
    run, _ = sft_run
    init = load_model(str(run / SFT_DIR))
    s, r = _sample_files(tmp_path, train_problems[:3], init.tokenizer,
                         {0: "passed", 1: "compile_error", 2: "failed"})
    rundir = tmp_path / "run"
    rundir.mkdir()
    (rundir / SFT_DIR).symlink_to(run / SFT_DIR)
    from coderl.rundir import meta_path
    meta_path(s).write_text(json.dumps({"fingerprint": {"model": "sft"}}))  # generated with `model: sft`
    cfg = RLConfig(batch_size=2, grad_accum=1, ce_every=1, kl_coef=0.1, progress=False,
                   val_source=None, val_pass_every=1, val_pass_problems=1, val_max_new_tokens=8)
    summary = train_rl(train_problems, rundir, cfg, samples_path=s, results_path=r,
                       val_problems=val_problems, echo=lambda *_: None)
    assert not [w for w in summary["data"]["warnings"] if "generated by" in w]   # `sft` is this run's SFT model
    # 6 samples with non-zero returns, 2 per micro-batch: 3 RL steps, each followed by a CE step
    assert summary["data"]["rl"]["examples"] == 6 and summary["data"]["rl"]["q_hat"] == "ones"
    kinds = [e["kind"] for e in _read_log(rundir / RL_DIR) if e["event"] == "step"]
    assert kinds == ["rl", "ce", "rl", "ce", "rl", "ce"]
    steps = [e for e in _read_log(rundir / RL_DIR) if e["event"] == "step" and e["kind"] == "rl"]
    assert all("kl" in e and e["kl"] >= 0 for e in steps)
    assert summary["history"][-1]["pass@1"] == 0.0 and summary["history"][-1]["problems"] == 1
    adapter = json.loads((rundir / RL_DIR / "adapter_config.json").read_text())
    # the RL adapter names this run's SFT model relative to itself: a copied run loads its own
    assert adapter["base_model_name_or_path"] == "../sft"
    assert type(load_model(str(rundir / RL_DIR)).model).__name__ == "LlamaForCausalLM"
    copy = tmp_path / "copy"
    shutil.copytree(rundir, copy, symlinks=False)
    shutil.rmtree(rundir)
    assert type(load_model(str(copy / RL_DIR)).model).__name__ == "LlamaForCausalLM"  # the original is gone
    ck = list_checkpoints(copy / RL_DIR)[-1]  # a resumable checkpoint of the copy loads too, as it lies
    assert json.loads((ck / "adapter_config.json").read_text())["base_model_name_or_path"] == "../../../sft"
    assert type(load_model(str(ck)).model).__name__ == "LlamaForCausalLM"


def test_rl_with_critic_scores(tmp_path, tiny_chat_dir, chat, train_problems):
    from coderl.critic.scores import SampleScores, program_hash, write_scores

    probs = train_problems[:2]
    s, r = _sample_files(tmp_path, probs, chat.tokenizer, {0: "passed", 1: "failed", 2: "failed"})
    recs = []
    results = {(d["problem_id"], d["index"]): d for d in map(json.loads, r.read_text().splitlines())}
    for d in map(json.loads, s.read_text().splitlines()):
        n = len(d["program"])
        offs = np.array([[0, n // 2], [n // 2, n]], dtype=np.int32)
        recs.append(SampleScores(d["problem_id"], d["index"], np.array([0.1, 0.1, 0.2, 0.6]),
                                 np.array([0.0, 0.0]), np.array([0.5, 0.5]), offs,
                                 results[(d["problem_id"], d["index"])]["outcome"], 3,
                                 program_hash(d["program"])))
    scores = write_scores(tmp_path / "critic_scores.npz", recs, {"classes": ["compile_error",
                          "runtime_error", "failed", "passed"]})
    cfg = RLConfig(init=str(tiny_chat_dir), mode="full", lr=1e-3, batch_size=4, grad_accum=1,
                   ce_every=0, **QUIET)
    before = _weights(load_model(str(tiny_chat_dir)).model)
    summary = train_rl(probs, tmp_path / "run", cfg, samples_path=s, results_path=r, scores_path=scores,
                       echo=lambda *_: None)
    assert summary["data"]["rl"]["q_hat"] == "critic" and summary["steps"] == 1
    # every q̂ is 0: the RL step changed no weight
    after = _weights(load_model(str(tmp_path / "run" / RL_DIR)).model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # stale scores (another outcome than the result's) are refused
    recs[0].outcome = "passed" if recs[0].outcome != "passed" else "failed"
    write_scores(scores, recs, {"classes": []})
    with pytest.raises(RecordError, match="stale"):
        train_rl(probs, tmp_path / "run2", cfg, samples_path=s, results_path=r, scores_path=scores,
                 echo=lambda *_: None)


def test_t5_sft_and_rl(tmp_path, tiny_t5_dir, train_problems):
    probs = train_problems[:2]
    cfg = SFTConfig(model=str(tiny_t5_dir), epochs=1, batch_size=2, grad_accum=1, **QUIET)
    assert train_sft(probs, tmp_path, cfg, echo=lambda *_: None)["steps"] == 1
    t5 = load_model(str(tmp_path / SFT_DIR))
    assert t5.is_encoder_decoder
    s, r = _sample_files(tmp_path / "d", probs, t5.tokenizer, {0: "passed", 1: "runtime_error", 2: "failed"},
                         is_encoder_decoder=True)
    rl = train_rl(probs, tmp_path, RLConfig(batch_size=4, grad_accum=1, **QUIET), samples_path=s,
                  results_path=r, echo=lambda *_: None)
    assert rl["steps_by_kind"] == {"rl": 1, "ce": 1}
    assert load_model(str(tmp_path / RL_DIR)).is_encoder_decoder


# -- resume ---------------------------------------------------------------------------------------

class Kill(Exception):
    pass


def _kill_at(step):
    def on_step(s):
        if s == step:
            raise Kill()
    return on_step


@pytest.mark.parametrize("stage", ["sft-lora", "rl-full"])
def test_killed_run_resumes_to_the_same_weights(stage, tmp_path, tiny_chat_dir, chat, train_problems):
    if stage == "sft-lora":
        cfg = SFTConfig(model=str(tiny_chat_dir), epochs=2, batch_size=1, grad_accum=2, lora_r=4,
                        lora_dropout=0.1, progress=False, val_source=None, save_every=2)
        run = lambda d, **kw: train_sft(train_problems, d, cfg, echo=lambda *_: None, **kw)  # 4 steps
        sub = SFT_DIR
    else:
        s, r = _sample_files(tmp_path / "data", train_problems[:2], chat.tokenizer,
                             {0: "passed", 1: "runtime_error", 2: "failed"})
        cfg = RLConfig(init=str(tiny_chat_dir), mode="full", lr=1e-3, batch_size=1, grad_accum=1,
                       ce_every=1, kl_coef=0.05, progress=False, val_source=None, save_every=2)
        run = lambda d, **kw: train_rl(train_problems[:2], d, cfg, samples_path=s, results_path=r,
                                       echo=lambda *_: None, **kw)  # 4 RL + 4 CE steps
        sub = RL_DIR
    whole = run(tmp_path / "whole")
    with pytest.raises(Kill):
        run(tmp_path / "killed", on_step=_kill_at(3))  # dies after step 3; last checkpoint: step 2
    assert [c.name for c in list_checkpoints(tmp_path / "killed" / sub)] == ["step-000002"]
    resumed = run(tmp_path / "killed")
    assert resumed["steps"] == whole["steps"] >= 4
    a = _weights(load_model(str(tmp_path / "whole" / sub)).model)
    b = _weights(load_model(str(tmp_path / "killed" / sub)).model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [e["step"] for e in _read_log(tmp_path / "killed" / sub) if e["event"] == "step"]
    assert steps == list(range(1, whole["steps"] + 1))  # the log cut back to the checkpoint


def test_vocab_kl_is_the_exact_kl_at_target_positions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    p, q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    want = (p.exp() * (p - q)).sum(-1)[mask].mean()
    assert torch.allclose(losses.vocab_kl(a, b, mask), want)
    assert float(losses.vocab_kl(a, a + 3.0, mask)) == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    b2 = b.clone()
    b2[0, 2] += 100.0   # a masked position changes nothing
    assert torch.equal(losses.vocab_kl(a, b2, mask), losses.vocab_kl(a, b, mask))
    targets = torch.randint(0, 7, (2, 3))
    lp = torch.log_softmax(a, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ce, kl = losses.nll_and_kl(a, b, targets, mask)
    assert torch.allclose(ce, losses.sft_loss(lp, mask)) and torch.allclose(kl, want)


def test_sft_kl_reference_has_no_dropout(tiny_t5_dir, train_problems):
    """The adapter-off reference runs without dropout (as mode full's frozen copy): on a T5 with
    dropout 0.1 in train mode, two reference passes agree, and the model is left training."""
    import types

    from peft import LoraConfig, TaskType, get_peft_model

    from coderl.training.actor import ActorTask

    lm = load_model(str(tiny_t5_dir))
    exs, _ = build_gold_examples(train_problems[:1], lm.tokenizer, True)
    batch = losses.collate(exs[:1], pad_id=lm.tokenizer.pad_token_id, is_encoder_decoder=True)
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules="all-linear", task_type=TaskType.SEQ_2_SEQ_LM))
    model.train()
    task = ActorTask.__new__(ActorTask)
    task.ref_model, task.accelerator = None, types.SimpleNamespace(unwrap_model=lambda m: m)
    torch.manual_seed(0)
    one = task.reference_call(model, losses.target_logits, batch)
    two = task.reference_call(model, losses.target_logits, batch)
    assert torch.equal(one, two) and model.training
    noisy = [losses.target_logits(model, batch) for _ in range(2)]   # training mode: dropout on
    assert not torch.equal(noisy[0], noisy[1])


def test_sft_kl_anchor_starts_at_zero_and_keeps_the_model_nearer_its_start(tmp_path, tiny_chat_dir, train_problems):
    """sft.kl_coef: the KL to the adapter-off model is 0 at the first step (LoRA starts as the
    identity) and the anchored run ends nearer the starting model than an (effectively) unanchored
    one at the same seed; without kl_coef the loss is the plain NLL (no reference pass)."""
    def kls(coef):
        cfg = SFTConfig(model=str(tiny_chat_dir), epochs=2, batch_size=1, grad_accum=1, lora_r=4, lr=5e-3,
                        lora_dropout=0.0, kl_coef=coef, **QUIET)
        train_sft(train_problems[:3], tmp_path / str(coef), cfg, echo=lambda *_: None)
        log = [e for e in _read_log(tmp_path / str(coef) / SFT_DIR) if e["event"] == "step"]
        return [e["kl"] for e in log], [e["ce"] for e in log]
    plain = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=1, grad_accum=1, lora_r=4, **QUIET)
    train_sft(train_problems[:1], tmp_path / "plain", plain, echo=lambda *_: None)
    steps = [e for e in _read_log(tmp_path / "plain" / SFT_DIR) if e["event"] == "step"]
    assert steps and not any("kl" in e or "ce" in e for e in steps)   # no reference pass
    free, free_ce = kls(1e-9)
    anchored, anchored_ce = kls(5.0)
    assert free[0] == pytest.approx(0.0, abs=1e-6) and anchored[0] == pytest.approx(0.0, abs=1e-6)
    assert free_ce[0] == pytest.approx(anchored_ce[0], rel=1e-6)   # the same first batch and model
    assert free[-1] > 0 and anchored[-1] < free[-1]
    assert "kl_coef" not in fingerprint(SFTConfig())
    with pytest.raises(ConfigError, match="kl_coef"):
        SFTConfig(kl_coef=-1.0)


def test_a_budget_finishes_a_run_and_a_larger_one_continues_it(tmp_path, tiny_chat_dir, train_problems):
    """max_steps: the run is complete at the budget, with a model to use (validated and published);
    a rerun with a larger budget continues to the same weights as one uninterrupted run."""
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=2, batch_size=1, grad_accum=2, lora_r=4,
                    progress=False, val_source=None, save_every=0)
    run = lambda d, c: train_sft(train_problems, d, c, echo=lambda *_: None)  # noqa: E731  (4 steps)
    whole = run(tmp_path / "whole", cfg)
    short = run(tmp_path / "budget", dataclasses.replace(cfg, max_steps=2))
    assert short["complete"] and short["steps"] == 2 and short["max_steps"] == 2
    assert load_model(str(tmp_path / "budget" / SFT_DIR)) is not None
    again = run(tmp_path / "budget", dataclasses.replace(cfg, max_steps=2))  # nothing left to do
    assert again["steps"] == 2
    longer = run(tmp_path / "budget", cfg)
    assert longer["complete"] and longer["steps"] == whole["steps"] == 4
    a = _weights(load_model(str(tmp_path / "whole" / SFT_DIR)).model)
    b = _weights(load_model(str(tmp_path / "budget" / SFT_DIR)).model)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- bad input ------------------------------------------------------------------------------------

def test_learning_rate_zero_or_infinite_is_a_config_error():
    for cls, key in ((SFTConfig, "sft.lr"), (RLConfig, "rl.lr")):
        with pytest.raises(ConfigError, match=key):
            cls(lr=0)
        with pytest.raises(ConfigError, match=key + ": must be a finite number > 0, got inf"):
            cls(lr=float("inf"))  # it would train a NaN model
    with pytest.raises(ConfigError, match="rl.origins"):
        RLConfig(origins=["gold"])
    with pytest.raises(ConfigError, match="best_metric"):
        SFTConfig(best_metric="pass@1")


def test_bad_samples_and_results_are_named(tmp_path, chat, train_problems):
    probs = train_problems[:2]
    s, r = _sample_files(tmp_path, probs, chat.tokenizer, {0: "passed", 1: "failed", 2: "failed"})
    kw = dict(reward=coderl_reward())
    # a sample of a problem outside the problem set
    with pytest.raises(RecordError, match=r"samples.jsonl:1: sample with unknown problem_id"):
        build_rl_examples(probs[1:], s, r, chat.tokenizer, False, **kw)
    # results missing for samples
    lines = r.read_text().splitlines()
    _write(tmp_path / "short.jsonl", [json.loads(l) for l in lines[:-2]])
    with pytest.raises(RecordError, match=r"samples.jsonl:5: sample \(problem_id='mbpp/602', index=1\) has no result in .*short.jsonl"):
        build_rl_examples(probs, s, tmp_path / "short.jsonl", chat.tokenizer, False, **kw)
    # samples generated from another prompt (another model or prompt style)
    with pytest.raises(TrainingError, match="another prompt"):
        build_rl_examples(probs, s, r, chat.tokenizer, False, prompt_style="plain", **kw)


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path, tiny_chat_dir, train_problems,
                                                           monkeypatch):
    real = losses.sft_loss
    calls = {"n": 0}

    def flaky(lp, mask):
        calls["n"] += 1
        out = real(lp, mask)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(losses, "sft_loss", flaky)
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=1, grad_accum=1, progress=False,
                    val_source=None, save_every=1)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 3.*last good checkpoint "
                                            r"is .*step-000002 \(step 2\)"):
        train_sft(train_problems, tmp_path, cfg, echo=lambda *_: None)
    cks = list_checkpoints(tmp_path / SFT_DIR)
    assert [c.name for c in cks] == ["step-000002"] and (cks[0] / STATE_FILE).is_file()
    load_model(str(cks[0]))  # the checkpoint is a loadable model


def test_a_finished_sft_box_under_other_training_examples_is_refused(tmp_path, tiny_chat_dir, train_problems):
    """The same settings but other examples (a gold program changed, or the code that builds the
    examples did, as the HumanEval shape's signature fix) is not "already complete": refused, naming
    the data, and the finished model is left as it was."""
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=1, grad_accum=1, max_steps=1, mode="full",
                    lr=1e-3, progress=False, val_source=None)
    assert train_sft(train_problems[:2], tmp_path, cfg, echo=lambda *_: None)["complete"]
    weights = {f.name: f.read_bytes() for f in (tmp_path / SFT_DIR).iterdir() if f.is_file()}
    edited = [dataclasses.replace(train_problems[0], solutions=[train_problems[0].solutions[0] + "\n# edited\n"]),
              train_problems[1]]
    with pytest.raises(ConfigError, match=r"other data; refusing to resume it\. Differences: data: "):
        train_sft(edited, tmp_path, cfg, echo=lambda *_: None)
    assert {f.name: f.read_bytes() for f in (tmp_path / SFT_DIR).iterdir() if f.is_file()} == weights


def _wider_llama(path: Path) -> Path:
    """A causal model with the tiny chat model's tokenizer but other sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import build_tokenizer

    tok = build_tokenizer(chat=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_chat_dir, train_problems):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_chat_dir, model_dir)
    cfg = SFTConfig(model=str(model_dir), epochs=1, batch_size=1, grad_accum=1, max_steps=1, mode="full",
                    lr=1e-3, progress=False, val_source=None)
    first = train_sft(train_problems[:2], tmp_path / "run", cfg, echo=lambda *_: None)
    assert first["complete"] and first["steps"] == 1 and first["total_steps"] == 2  # a budget of 1 of 2
    # a budgeted run is finished: it has a model to use
    assert (tmp_path / "run" / "sft" / "config.json").is_file() and first["selected"] == "last"
    shutil.rmtree(model_dir)
    _wider_llama(model_dir)  # the same path (and settings), another architecture
    more = dataclasses.replace(cfg, max_steps=2)  # a larger budget resumes from the checkpoint
    with pytest.raises(TrainingError, match=r"step-000001: this checkpoint belongs to another model "
                                            r"architecture \(hidden_size: 32 there, 48 now"):
        train_sft(train_problems[:2], tmp_path / "run", more, echo=lambda *_: None)
    # resuming under another config (here: the learning rate) is refused, naming it
    cfg3 = SFTConfig(model=str(model_dir), epochs=1, batch_size=1, grad_accum=1, mode="full",
                     lr=1e-4, progress=False, val_source=None)
    with pytest.raises(ConfigError, match="lr"):
        train_sft(train_problems[:2], tmp_path / "run", cfg3, echo=lambda *_: None)
    # an RL init without an SFT model
    with pytest.raises(TrainingError, match="no SFT model"):
        train_rl(train_problems, tmp_path / "empty", RLConfig(), samples_path=tmp_path / "x",
                 results_path=tmp_path / "y")


def test_a_typed_default_lr_resumes_a_run_made_with_lr_null(tmp_path, tiny_chat_dir, train_problems):
    """The trainer's own resume check treats lr: null as the mode's default: a budgeted run made
    without lr continues under the typed default instead of being refused as other settings."""
    cfg = SFTConfig(model=str(tiny_chat_dir), epochs=1, batch_size=1, grad_accum=1, max_steps=1,
                    progress=False, val_source=None)
    assert train_sft(train_problems[:2], tmp_path, cfg, echo=lambda *_: None)["steps"] == 1
    more = dataclasses.replace(cfg, max_steps=2, lr=SFTConfig.DEFAULT_LR["lora"])
    assert train_sft(train_problems[:2], tmp_path, more, echo=lambda *_: None)["steps"] == 2


def test_sft_trains_the_humaneval_prompt_shape_too(tiny_chat_dir, tiny_causal_dir):
    """prompt_shapes [native, humaneval]: each function-writing MBPP gold program also as HumanEval
    poses problems (signature + docstring given): chat prompts ask for the whole function, plain
    prompts continue after the docstring with the body."""
    from transformers import AutoTokenizer

    from coderl.problems import load_problems
    from coderl.training.data import SHAPE_INDEX, build_gold_examples, humaneval_shape

    problems = load_problems("mbpp", split="train", end=6)
    p = next(q for q in problems if humaneval_shape(q, q.solutions[0]) is not None)
    hp = humaneval_shape(p, p.solutions[0])
    assert hp.source == "humaneval" and f"def {p.entry_point}(" in hp.prompt and '"""' in hp.prompt
    assert ">>> " in hp.prompt  # the first assert as an example
    import ast as _ast
    for q in load_problems("mbpp", split="train"):   # prompt + body is always valid Python
        shaped = humaneval_shape(q, q.solutions[0])
        if shaped is not None:
            _ast.parse(shaped.prompt + shaped.meta["body"])
    for d, whole in ((tiny_chat_dir, True), (tiny_causal_dir, False)):
        tok = AutoTokenizer.from_pretrained(str(d))
        native, _ = build_gold_examples(problems, tok, False)
        both, counts = build_gold_examples(problems, tok, False, shapes=("native", "humaneval"))
        extra = [e for e in both if e.origin == "gold-humaneval"]
        assert len(both) == len(native) + len(extra) and counts["humaneval_examples"] == len(extra) > 0
        e = next(x for x in extra if x.problem_id == p.id)
        assert e.index == SHAPE_INDEX
        prompt, target = tok.decode(e.prompt_ids), tok.decode(e.target_ids, skip_special_tokens=True)
        assert hp.prompt.strip() in prompt.replace("<s>", "")
        if whole:   # the chat prompt asks for the function: the target starts with its signature
            assert "Complete the following Python function" in prompt and target.startswith(f"def {p.entry_point}(")
        else:       # the plain prompt is the code itself: the target is the body
            assert not target.startswith("def ") and target.strip() in p.solutions[0].replace("\r\n", "\n")
    from coderl.training.sft_config import SFTConfig
    from coderl.config import ConfigError
    with pytest.raises(ConfigError, match="prompt_shapes"):
        SFTConfig(prompt_shapes=["native", "codex"])


def test_the_humaneval_shape_takes_the_signature_as_written():
    """A space before the colon, a return annotation or a comment after the signature keep a gold
    program's HumanEval shape (21 of MBPP's 374 train problems were dropped before); a one-line
    function has no body to put under a docstring and stays native only."""
    import ast as _ast
    import re as _re

    from coderl.problems import load_problems
    from coderl.training.data import humaneval_shape

    problems = load_problems("mbpp", split="train")
    p = next(q for q in problems if humaneval_shape(q, q.solutions[0]) is not None)
    sol = p.solutions[0].replace("\r\n", "\n")
    sig = _re.search(rf"^def {p.entry_point}\((.*)\):[ \t]*$", sol, _re.M)
    for line in (f"def {p.entry_point}({sig.group(1)}) :", f"def {p.entry_point}({sig.group(1)}) -> object:",
                 f"def {p.entry_point}({sig.group(1)}):  # see (1): a note"):
        shaped = humaneval_shape(p, sol.replace(sig.group(0), line))
        assert shaped is not None, line
        assert line in shaped.prompt and '"""' in shaped.prompt.split(line)[1]
        _ast.parse(shaped.prompt + shaped.meta["body"])
    assert humaneval_shape(p, f"def {p.entry_point}({sig.group(1)}): return None\n") is None
    assert sum(humaneval_shape(q, q.solutions[0]) is not None for q in problems) == 351


def test_normalized_gold_is_the_same_program_in_one_layout(tiny_chat_dir):
    """gold_style normalized: MBPP's gold programs (tabs, 2- and 8-space indents, `if (x) :`) are
    trained as ast.unparse lays them out -- the same syntax tree, 4-space indents, no `) :` --
    and a program that does not parse is kept as written (counted)."""
    import ast as _ast
    import re as _re
    import warnings

    from transformers import AutoTokenizer

    from coderl.training.data import normalized_gold

    tabbed = "def f(a) :\n\tif (a > 1):\n\t\treturn a  # big\n\treturn 0\n"
    assert normalized_gold(tabbed) == "def f(a):\n    if a > 1:\n        return a\n    return 0\n"
    assert normalized_gold("def f(:\n  pass") is None
    problems = load_problems("mbpp", split="train")
    for q in problems:
        n = normalized_gold(q.solutions[0])
        warnings.simplefilter("ignore")   # MBPP's invalid escapes
        assert _ast.dump(_ast.parse(n)) == _ast.dump(_ast.parse(q.solutions[0].replace("\r\n", "\n")))
        assert "\t" not in n and not _re.search(r"\) :", n)
    tok = AutoTokenizer.from_pretrained(str(tiny_chat_dir))
    sub = [q for q in problems if "\t" in q.solutions[0]][:3]
    broken = dataclasses.replace(sub[0], id="broken", solutions=[f"def {sub[0].entry_point}(a:\n\tpass"])
    raw, rc = build_gold_examples(sub, tok, False)
    norm, nc = build_gold_examples(sub + [broken], tok, False, style="normalized")
    assert nc["normalized"] == len(sub) and nc["normalize_failed"] == 1 and "normalized" not in rc
    for e in norm:
        text = tok.decode(e.target_ids, skip_special_tokens=True)
        assert ("\t" in text) == (e.problem_id == "broken")
    assert any("\t" in tok.decode(e.target_ids, skip_special_tokens=True) for e in raw)
    assert any(e.problem_id == "broken" for e in norm)   # kept as written
    # a prompt that pre-fills starter code in the raw layout (APPS call-based, chat prompts): the
    # raw program is used where the normalized one no longer starts with it; nothing is lost
    apps = load_problems("apps")
    a_raw, _ = build_gold_examples(apps, tok, False)
    a_norm, ac = build_gold_examples(apps, tok, False, style="normalized")
    assert len(a_norm) == len(a_raw) > 0 and ac["normalize_prefix_fallback"] > 0
    _, only = build_gold_examples(sub, tok, False, shapes=("humaneval",), style="normalized")
    assert only["normalized"] == len(sub)
    assert SFTConfig().gold_style == "raw" and "gold_style" not in fingerprint(SFTConfig())
    with pytest.raises(ConfigError, match="gold_style"):
        SFTConfig(gold_style="black")
    with pytest.raises(ValueError, match="gold style"):
        build_gold_examples(sub, tok, False, style="pep8")


def test_expert_iteration_trains_only_on_passing_programs(tmp_path, tiny_chat_dir):
    """train-expert keeps the run's passing samples (distinct, capped per problem) as SFT targets
    written as the model wrote them; a run without a passing sample is a clear error."""
    import json as _json

    from coderl.records import program_hash
    from coderl.rundir import RunDir
    from coderl.training.data import TrainingError
    from coderl.training.expert_config import ExpertConfig
    from coderl.training.expert_trainer import train_expert
    from coderl.problems.schema import Problem

    run = RunDir(tmp_path / "run").mkdir()
    problems = [Problem(id=f"t/{i}", source="jsonl", kind="assert", entry_point="add", question=f"Add {i}.",
                        tests={"asserts": ["assert add(1, 2) == 3"]}) for i in range(3)]
    samples, results = [], []
    for p in problems:
        for j, (body, outcome) in enumerate([("return a + b", "passed"), ("return a + b", "passed"),
                                             ("return b + a", "passed"), ("return a - b", "failed"),
                                             ("return a + b + 0", "passed"), ("return 3", "passed")]):
            prog = f"def add(a, b):\n    {body}\n"
            samples.append({"problem_id": p.id, "index": j, "program": prog, "raw": prog[len("def add("):] + "```",
                            "origin": "sampled", "finish": "length" if j == 5 else "stop"})
            results.append({"problem_id": p.id, "index": j, "outcome": outcome, "program_hash": program_hash(prog)})
    run.samples.write_text("".join(_json.dumps(s) + "\n" for s in samples))
    run.results.write_text("".join(_json.dumps(r) + "\n" for r in results))
    cfg = ExpertConfig(model=str(tiny_chat_dir), max_per_problem=2, epochs=1, batch_size=2, grad_accum=1,
                       val_source=None, save_every=0, progress=False)
    s = train_expert(problems, run, cfg, progress=False, echo=lambda x: None)
    assert s["complete"] and s["data"]["train"]["passed"] == 15
    assert s["data"]["train"]["skipped_unfinished"] == 3   # cut by the token budget: never trained on
    data = [_json.loads(l) for l in (run.expert / "data.jsonl").read_text().splitlines()]
    # 2 per problem: the first two distinct passing programs (index 1 repeats index 0's program)
    assert sorted((d["problem_id"], d["index"]) for d in data) == [(p.id, j) for p in problems for j in (0, 2)]
    for r in results:
        r["outcome"] = "failed"
    run.results.write_text("".join(_json.dumps(r) + "\n" for r in results))
    import shutil
    shutil.rmtree(run.expert)
    with pytest.raises(TrainingError, match="no sample .* passed"):
        train_expert(problems, run, cfg, progress=False, echo=lambda x: None)


def test_expert_iteration_in_both_prompt_shapes(tmp_path, tiny_chat_dir):
    """expert.prompt_shapes [native, humaneval]: each kept passing program also trained in
    HumanEval's shape (signature + docstring given, the model's own program as the target), as
    train-actor does gold programs; a program with code before its function is left out of that
    shape; humaneval alone keeps only those; bad shapes are refused."""
    import json as _json

    from coderl.models import load_model
    from coderl.records import program_hash
    from coderl.rundir import RunDir
    from coderl.training.data import SHAPE_INDEX
    from coderl.training.expert_config import ExpertConfig
    from coderl.training.expert_trainer import passing_examples
    from coderl.problems.schema import Problem

    run = RunDir(tmp_path / "run").mkdir()
    problems = [Problem(id=f"t/{i}", source="jsonl", kind="assert", entry_point="add", question=f"Add {i}.",
                        tests={"asserts": ["assert add(1, 2) == 3"]}) for i in range(2)]
    programs = ["def add(a, b):\n    return a + b\n", "X = 0\ndef add(a, b):\n    return b + a + X\n"]
    samples, results = [], []
    for p in problems:
        for j, prog in enumerate(programs):
            samples.append({"problem_id": p.id, "index": j, "program": prog, "raw": prog + "```",
                            "origin": "sampled", "finish": "stop"})
            results.append({"problem_id": p.id, "index": j, "outcome": "passed", "program_hash": program_hash(prog)})
    run.samples.write_text("".join(_json.dumps(x) + "\n" for x in samples))
    run.results.write_text("".join(_json.dumps(x) + "\n" for x in results))
    lm = load_model(str(tiny_chat_dir))
    native, c1 = passing_examples(problems, run, ExpertConfig(model=str(tiny_chat_dir), val_source=None), lm)
    both, c2 = passing_examples(problems, run, ExpertConfig(model=str(tiny_chat_dir), val_source=None,
                                                            prompt_shapes=["native", "humaneval"]), lm)
    assert len(native) == 4 and "humaneval_examples" not in c1
    shaped = [e for e in both if e.index >= SHAPE_INDEX]
    assert both[:4] == native and c2["humaneval_examples"] == 2 and c2["humaneval_skipped_shape"] == 2
    assert sorted((e.problem_id, e.index) for e in shaped) == [("t/0", SHAPE_INDEX), ("t/1", SHAPE_INDEX)]
    for e in shaped:
        prompt = lm.tokenizer.decode(e.prompt_ids)
        assert f"Add {e.problem_id[-1]}." in prompt and ">>> add(1, 2)" in prompt and '"""' in prompt
        assert "return a + b" in lm.tokenizer.decode(e.target_ids) and e.origin == "sampled-humaneval"
    only, _ = passing_examples(problems, run, ExpertConfig(model=str(tiny_chat_dir), val_source=None,
                                                           prompt_shapes=["humaneval"]), lm)
    assert [(e.problem_id, e.index) for e in only] == [(e.problem_id, e.index) for e in shaped]
    with pytest.raises(ConfigError, match=r"expert.prompt_shapes: \['apps'\]"):
        ExpertConfig(prompt_shapes=["apps"])


def test_a_setting_added_later_leaves_the_fingerprint_at_its_default():
    """sft.prompt_shapes came after SFT boxes were written: at its default it is not in the
    fingerprint (those boxes still resume); another value is (and is refused or redone)."""
    from coderl.config import fingerprint
    from coderl.training.sft_config import SFTConfig

    assert "prompt_shapes" not in fingerprint(SFTConfig())
    assert fingerprint(SFTConfig(prompt_shapes=["native", "humaneval"]))["prompt_shapes"] == ["native", "humaneval"]


def test_group_advantages_sum_to_zero_and_equal_rewards_change_nothing():
    from coderl.training.advantages import advantages

    for kind in ("group", "group_std"):
        adv, equal = advantages([1.0, -0.3, -1.0, 1.0], kind)
        assert abs(sum(adv)) < 1e-9 and not equal
        adv, equal = advantages([-0.3, -0.3, -0.3], kind)
        assert adv == [0.0, 0.0, 0.0] and equal
    adv, _ = advantages([1.0, -1.0], "group_std")
    assert adv[0] == pytest.approx(1.0, abs=1e-5) and adv[1] == pytest.approx(-1.0, abs=1e-5)
    assert advantages([1.0, -0.3], "coderl", greedy_reward=-0.3)[0] == pytest.approx([1.3, 0.0])
    # CodeRL's baseline: a group all failing still teaches where the greedy program did worse
    assert advantages([-0.3, -0.3], "coderl", greedy_reward=-1.0) == (pytest.approx([0.7, 0.7]), False)
    assert advantages([-0.3, -0.3], "coderl", greedy_reward=-0.3)[1]
    with pytest.raises(ValueError, match="at least 2"):
        advantages([1.0], "group")
    with pytest.raises(ValueError, match="finite"):
        advantages([1.0, float("nan")], "group")


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_logprobs_and_gradients_equal_the_unshared_ones(tiny_causal_dir, lora):
    """The prompt run once for a group of continuations: the same per-token log-probabilities,
    loss and gradients (every weight, LoRA adapters included) as each sequence run on its own."""
    from transformers import AutoModelForCausalLM

    from coderl.training.shared_prefix import group_token_logprobs

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_causal_dir), dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                                 init_lora_weights=False))
    prompt = [5, 17, 33, 41, 8, 9, 100]
    conts = [[12, 13, 14, 15, 16], [60, 61], [70, 71, 72]]
    adv = torch.tensor([1.0, -0.5, 0.25])
    params = [p for p in model.parameters() if p.requires_grad]

    lp, mask = group_token_logprobs(model, prompt, conts)
    loss = -(adv[:, None] * lp * mask).sum() / mask.sum()
    shared = torch.autograd.grad(loss, params)

    ref, n = [], mask.sum()
    total = 0.0
    for a, c in zip(adv, conts):
        ids = torch.tensor([prompt + c])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
        tok = logits.gather(-1, torch.tensor(c)[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
        ref.append(tok)
        total = total - (a * tok).sum() / n
    unshared = torch.autograd.grad(total, params)
    for i, c in enumerate(conts):
        torch.testing.assert_close(lp[i, :len(c)], ref[i], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, total, atol=1e-6, rtol=1e-5)
    for g1, g2 in zip(shared, unshared):
        torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-4)


def test_a_micro_batch_of_several_problems_runs_each_prompt_once_to_the_same_loss_and_gradients(tiny_causal_dir):
    """Offline RL's shared prompts: a micro-batch mixing problems (rows of one problem not adjacent)
    gives collate's left-padded log-probabilities, CodeRL's loss and its gradients as the unshared
    computation, at fewer tokens."""
    from transformers import AutoModelForCausalLM

    from coderl.training import losses
    from coderl.training.data import Example
    from coderl.training.shared_prefix import batch_logprobs, prompt_groups

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_causal_dir), dtype=torch.float32)
    a, b = [5, 17, 33, 41, 8, 9, 100], [7, 7, 21]
    rows = [(a, [12, 13, 14, 15, 16], 1.0), (b, [60, 61], -0.5), (a, [70, 71, 72], 0.25), (b, [80], 2.0)]
    items = [Example(problem_id=str(p[0]), index=i, kind="sample", prompt_ids=p, target_ids=t, ret=r,
                     weights=[0.5 + 0.1 * j for j in range(len(t))]) for i, (p, t, r) in enumerate(rows)]
    assert prompt_groups(items) == [(a, [0, 2]), (b, [1, 3])]
    batch = losses.collate(items, pad_id=0, is_encoder_decoder=False)
    params = [p for p in model.parameters() if p.requires_grad]
    lp_ref = losses.token_logprobs(model, batch)
    ref = objective.rl_loss(lp_ref, batch["target_mask"], batch["returns"], batch["weights"])
    g_ref = torch.autograd.grad(ref, params)
    lp = batch_logprobs(model, {**batch, "prompt_groups": prompt_groups(items)})
    loss = objective.rl_loss(lp, batch["target_mask"], batch["returns"], batch["weights"])
    g = torch.autograd.grad(loss, params)
    m = batch["target_mask"]
    torch.testing.assert_close(lp[m], lp_ref[m], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    for x, y in zip(g, g_ref):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-4)


def test_train_rl_with_shared_prompts_takes_the_unshared_steps_at_fewer_tokens(tmp_path, tiny_chat_dir, chat,
                                                                            train_problems, monkeypatch):
    """The whole loop: each step's loss and the final weights equal those of the same data order
    computed row by row; gradient checkpointing (no prompt cache) falls back to row by row."""
    from coderl.training import shared_prefix

    s, r = _sample_files(tmp_path / "data", train_problems[:2], chat.tokenizer,
                         {0: "passed", 1: "runtime_error", 2: "failed"})

    def run(d, **kw):
        cfg = RLConfig(init=str(tiny_chat_dir), mode="full", lr=1e-3, batch_size=2, grad_accum=1, ce_every=0,
                       kl_coef=0.05, progress=False, val_source=None, save_every=0, **kw)
        train_rl(train_problems[:2], d, cfg, samples_path=s, results_path=r, echo=lambda *_: None)
        return ([e for e in _read_log(d / RL_DIR) if e["event"] == "step"],
                _weights(load_model(str(d / RL_DIR)).model))

    shared, w = run(tmp_path / "shared")
    checkpointed, w_gc = run(tmp_path / "gc", gradient_checkpointing=True)
    monkeypatch.setattr(shared_prefix, "prompt_groups",  # a group per row: row by row, in the same order
                        lambda items: [(e.prompt_ids, [i]) for i, e in enumerate(items)])
    unshared, w_rows = run(tmp_path / "rows")
    assert len(shared) == len(unshared) == len(checkpointed) == 2
    for a, b, c in zip(shared, unshared, checkpointed):
        assert a["tokens"] < b["tokens"] == c["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and c["loss"] == pytest.approx(b["loss"], abs=1e-5)
    for k in w:
        torch.testing.assert_close(w[k], w_rows[k], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(w_gc[k], w_rows[k], atol=1e-5, rtol=1e-4)


def test_grouped_batches_keep_a_problems_samples_together_and_cover_each_once_an_epoch():
    groups = [[0, 3], [1], [2, 4, 5]]
    src = FixedBatches({"rl": list("abcdef")}, epochs=2, batch_size=2, seed=1, groups={"rl": groups})
    src.bind(1)
    assert len(src) == 6
    for epoch in (0, 1):
        order = [x for s in range(3 * epoch, 3 * epoch + 3) for x in src.step(s).micro_batches[0]]
        assert sorted(order) == list("abcdef")
        for g in groups:  # each group's items in a row, in the group's order
            at = order.index("abcdef"[g[0]])
            assert order[at:at + len(g)] == ["abcdef"[i] for i in g]


def _online_problems():
    from coderl.problems import load_problems

    return load_problems("mbpp", split="train", end=3)


def _online_cfg(model_dir, **kw):
    from coderl.training.online_config import OnlineConfig

    base = dict(init=str(model_dir), rounds=2, problems_per_round=2, group_size=2, max_new_tokens=8,
                gen_batch_size=8, batch_size=2, grad_accum=1, lr=1e-2, val_source=None, progress=False,
                skip_equal=False, seed=0)
    base.update(kw)
    return OnlineConfig(**base)


def test_online_rl_writes_rounds_and_a_killed_run_resumes_to_the_same_weights(tmp_path, tiny_chat_dir):
    from safetensors.torch import load_file

    from coderl.records import read_results, read_samples
    from coderl.rundir import RunDir
    from coderl.training.online_trainer import train_online

    problems = _online_problems()
    a = RunDir(tmp_path / "a").mkdir()
    cfg = _online_cfg(tiny_chat_dir, reward="test_training:_len_reward")   # rewards that differ within a group
    s = train_online(problems, a, cfg, progress=False, echo=lambda x: None)
    assert s["complete"] and s["steps"] == 2
    for r in range(2):   # every round's programs and verdicts are ordinary records
        d = a.online / "rounds" / f"{r:06d}"
        samples, results = read_samples(d / "samples.jsonl"), read_results(d / "results.jsonl")
        assert len(samples) == len(results) == 4 and {x.meta["round"] for x in samples} == {r}
    rounds = [json.loads(l) for l in (a.online / "rounds.jsonl").read_text().splitlines()]
    assert [x["round"] for x in rounds] == [0, 1] and all("pass_rate" in x and "generate_s" in x for x in rounds)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(a.online / "tb"))
    tb.Reload()
    for key in ("mean_reward", "pass_rate", "generate_s"):   # per round in TensorBoard too, x = the round
        assert [(e.step, round(e.value, 4)) for e in tb.Scalars(f"round/{key}")] == \
            [(x["round"], round(x[key], 4)) for x in rounds]
    # the KL to the starting model (the adapters off) is 0 before the first update, not after
    steps = [json.loads(l) for l in (a.online / "log.jsonl").read_text().splitlines()]
    kls = [x["kl"] for x in steps if "kl" in x]
    assert len(kls) == 2 and abs(kls[0]) < 1e-6 and kls[1] != 0

    b = RunDir(tmp_path / "b").mkdir()

    def killed(step):
        if step == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_online(problems, b, cfg, progress=False, echo=lambda x: None, on_step=killed)
    train_online(problems, b, cfg, progress=False, echo=lambda x: None)
    assert [json.loads(l)["round"] for l in (b.online / "rounds.jsonl").read_text().splitlines()] == [0, 1]
    wa = load_file(str(a.online / "adapter_model.safetensors"))
    wb = load_file(str(b.online / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("steps_per_round", [1, 2])
def test_online_rl_validates_after_every_round_and_publishes_the_last_model(tmp_path, tiny_chat_dir, steps_per_round,
                                                                              monkeypatch):
    """The learning curve: validation (gold loss + greedy pass@1) at step 0 and after each round's
    last step, never mid-round; its gold programs laid out as the init SFT box recorded; the last
    model published unless best_metric picks a round; a run killed after a round's validation
    resumes to the same weights and the same curve."""
    from safetensors.torch import load_file

    from coderl.rundir import RunDir, write_meta
    from coderl.training import online_trainer
    from coderl.training.online_trainer import train_online

    styles = []
    real = online_trainer.validation_set

    def spy(*a, style=None, **kw):
        styles.append(style)
        return real(*a, style=style, **kw)
    monkeypatch.setattr(online_trainer, "validation_set", spy)

    def make_run(name, gold_style=None):
        run = RunDir(tmp_path / name).mkdir()
        shutil.copytree(tiny_chat_dir, run.sft)
        if gold_style:
            write_meta(run.sft, "train-actor", {"config": {"gold_style": gold_style}}, complete=True)
        return run

    val = dict(val_source="mbpp", val_split="validation", val_limit=2, val_pass_every=1, val_pass_problems=1,
               val_max_new_tokens=8, reward="test_training:_len_reward", problems_per_round=2)
    cfg = _online_cfg("sft", steps_per_round=steps_per_round, **val)
    run = make_run("run", "normalized")
    s = train_online(_online_problems(), run, cfg, progress=False, echo=lambda x: None)
    evals = [e for e in _read_log(run.online) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, steps_per_round, 2 * steps_per_round]
    assert all(e["pass@1"] is not None and e["loss"] > 0 for e in evals)
    assert styles == ["normalized"] and s["data"]["validation_gold_style"] == "normalized"
    assert s["data"]["validation_problems"] == 2
    assert s["selected"] == "last" and not any(e["best"] for e in evals)
    assert json.loads((run.online / "coderl_training.json").read_text())["step"] == 2 * steps_per_round
    if steps_per_round == 2:
        return
    # killed after round 0's validation: the resumed run validates round 1 once, same weights and curve
    killed_run = make_run("killed", "normalized")

    def killed(step):
        if step == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_online(_online_problems(), killed_run, cfg, progress=False, echo=lambda x: None, on_step=killed)
    train_online(_online_problems(), killed_run, cfg, progress=False, echo=lambda x: None)
    again = [e for e in _read_log(killed_run.online) if e["event"] == "eval"]
    assert [(e["step"], e["loss"], e["pass@1"]) for e in again] == [(e["step"], e["loss"], e["pass@1"]) for e in evals]
    wa, wb = (load_file(str(r.online / "adapter_model.safetensors")) for r in (run, killed_run))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a round picked by validation instead (pass@1 ties at 0 on a random model: the lower loss)
    run2 = make_run("run2")
    s2 = train_online(_online_problems(), run2, _online_cfg("sft", best_metric="pass@1", **val),
                      progress=False, echo=lambda x: None)
    evals2 = [e for e in _read_log(run2.online) if e["event"] == "eval" and e["step"] > 0]
    assert s2["selected"] == "best" and s2["best"]["step"] == min(evals2, key=lambda e: e["loss"])["step"]
    assert styles[-1] == "raw" and s2["data"]["validation_gold_style"] == "raw"   # no sidecar: the default


def test_online_rl_bad_inputs(tmp_path, tiny_chat_dir):
    from coderl.config import ConfigError
    from coderl.rundir import RunDir
    from coderl.training.data import TrainingError
    from coderl.training.online_trainer import train_online

    with pytest.raises(ConfigError, match="at least 2"):
        _online_cfg(tiny_chat_dir, group_size=1)
    with pytest.raises(ConfigError, match=r"online.patience: 2 .*best_metric last scores none"):
        _online_cfg(tiny_chat_dir, patience=2)   # online publishes the last model: nothing to stop on
    assert _online_cfg(tiny_chat_dir, patience=2, best_metric="loss").patience == 2
    _online_cfg(tiny_chat_dir, group_size=1, advantage="coderl")   # CodeRL's baseline is the greedy program
    run = RunDir(tmp_path / "r").mkdir()
    with pytest.raises(TrainingError, match=r"raised ZeroDivisionError.* in round 0"):
        train_online(_online_problems(), run, _online_cfg(tiny_chat_dir, reward="test_training:_bad_reward"),
                     progress=False, echo=lambda x: None)
    assert (run.online / "rounds" / "000000" / "results.jsonl").is_file()   # the round written is kept
    with pytest.raises(ConfigError, match="cannot be loaded"):
        train_online(_online_problems(), run, _online_cfg(tiny_chat_dir, reward="nowhere:fn"),
                     progress=False, echo=lambda x: None)
    with pytest.raises(TrainingError, match="no.*tests"):
        from coderl.problems.schema import Problem
        train_online([Problem(id="x", source="jsonl", kind="assert", question="q", tests={})], run,
                     _online_cfg(tiny_chat_dir), progress=False, echo=lambda x: None)


def test_named_online_rewards():
    """pass_fail: 1 only for a passing program, so a group without one is all-equal (skipped by the
    group baseline) instead of ranking runtime errors below wrong answers as CodeRL's table does."""
    from coderl.training.advantages import advantages
    from coderl.training.online_trainer import make_reward

    def result(o):
        return {"problem_id": "p", "index": 0, "outcome": o}
    outcomes = ["passed", "failed", "runtime_error", "compile_error"]
    assert [make_reward("pass_fail")(None, "", result(o)) for o in outcomes] == [1.0, 0.0, 0.0, 0.0]
    assert [make_reward("coderl")(None, "", result(o)) for o in outcomes] == [1.0, -0.3, -0.6, -1.0]
    no_pass = ["failed", "runtime_error", "runtime_error", "failed"]
    _, equal = advantages([make_reward("pass_fail")(None, "", result(o)) for o in no_pass], "group")
    assert equal
    a, equal = advantages([make_reward("coderl")(None, "", result(o)) for o in no_pass], "group")
    assert not equal and a[0] > 0 > a[1]     # CodeRL's table: the wrong answer above the crash
    # pass_ratio: the share of tests passed, whatever the failure: a crash and a wrong answer that
    # pass no test are equal (no "do not crash" drift), one that passes more tests ranks higher
    def partial(o, k, n=3):
        return {"problem_id": "p", "index": 0, "outcome": o, "tests_passed": k, "tests_total": n}
    ratio = make_reward("pass_ratio")
    assert [ratio(None, "", partial(o, k)) for o, k in
            [("passed", 3), ("failed", 2), ("failed", 0), ("runtime_error", 1), ("runtime_error", 0),
             ("compile_error", 0)]] == [1.0, 2 / 3, 0.0, 1 / 3, 0.0, 0.0]
    assert ratio(None, "", partial("failed", 0, 0)) == 0.0     # no tests counted: no credit, no division
    _, equal = advantages([ratio(None, "", partial(o, 0)) for o in no_pass], "group")
    assert equal
    a, equal = advantages([ratio(None, "", partial(o, k)) for o, k in
                           [("failed", 2), ("runtime_error", 0), ("failed", 0), ("runtime_error", 0)]], "group")
    assert not equal and a[0] > 0 and a[1] == a[2] == a[3] < 0
    with pytest.raises(ConfigError, match="pass_ratio or module:function"):
        make_reward("binary")


def _len_reward(problem, program, result):
    return float(len(program) % 3)


def _bad_reward(problem, program, result):
    return 1 / 0


def test_online_rl_with_all_equal_rewards_changes_nothing(tmp_path, tiny_chat_dir):
    """Every reward the same: every group baseline advantage is 0, so the first update is a no-op."""
    from safetensors.torch import load_file

    from coderl.rundir import RunDir
    from coderl.training.online_trainer import train_online

    run = RunDir(tmp_path / "r").mkdir()
    train_online(_online_problems(), run, _online_cfg(tiny_chat_dir, rounds=1, reward="test_training:_same_reward",
                                                      lora_dropout=0.0), progress=False, echo=lambda x: None)
    w = load_file(str(run.online / "adapter_model.safetensors"))
    assert all(torch.all(v == 0) for k, v in w.items() if "lora_B" in k)   # B starts at 0 and stayed there
    stats = json.loads((run.online / "rounds.jsonl").read_text().splitlines()[0])
    assert stats["groups_all_equal"] == 2


def _same_reward(problem, program, result):
    return 0.5


def test_clipped_surrogate_equals_the_policy_gradient_at_ratio_one_and_clips_beyond():
    from coderl.training.objective import clipped_pg_loss, rl_loss

    torch.manual_seed(0)
    x = torch.randn(3, 5, requires_grad=True)
    lp = torch.log_softmax(x, -1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 2.0])
    plain = torch.autograd.grad(rl_loss(lp, mask, adv), x, retain_graph=True)[0]
    loss, clipped = clipped_pg_loss(lp, lp.detach(), mask, adv, 0.2)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], plain)   # the first step of a round
    assert float(clipped) == 0.0
    # the policy already moved past 1 + clip on a positive advantage: no more push there
    lp2 = torch.log_softmax(x, -1)
    old = lp2.detach() - 0.5                                               # ratio e^0.5 = 1.65 > 1.2
    loss2, clipped2 = clipped_pg_loss(lp2, old, mask, torch.tensor([1.0, 1.0, 1.0]), 0.2)
    assert float(clipped2) == 1.0
    assert torch.count_nonzero(torch.autograd.grad(loss2, x, retain_graph=True)[0]) == 0
    # ... but a negative advantage still pulls it back (min picks the unclipped term)
    loss3, _ = clipped_pg_loss(lp2, old, mask, torch.tensor([-1.0, -1.0, -1.0]), 0.2)
    assert torch.count_nonzero(torch.autograd.grad(loss3, x)[0]) > 0


def test_online_rl_with_several_steps_a_round_keeps_the_sampling_policy_and_resumes_mid_round(tmp_path, tiny_chat_dir):
    from safetensors.torch import load_file

    from coderl.config import ConfigError
    from coderl.rundir import RunDir
    from coderl.training.online_trainer import train_online

    with pytest.raises(ConfigError, match="steps_per_round"):
        _online_cfg(tiny_chat_dir, steps_per_round=3)    # 2 problems a round: at most 2 mini-batches
    problems = _online_problems()
    cfg = _online_cfg(tiny_chat_dir, reward="test_training:_len_reward", steps_per_round=2)
    a = RunDir(tmp_path / "a").mkdir()
    s = train_online(problems, a, cfg, progress=False, echo=lambda x: None)
    assert s["complete"] and s["steps"] == 4
    old = json.loads((a.online / "rounds" / "000000" / "old_logprobs.json").read_text())
    assert len(old) == 4 and all(v and all(x <= 0 for x in v) for v in old.values())
    steps = [json.loads(l) for l in (a.online / "log.jsonl").read_text().splitlines()]
    rl = [x for x in steps if "clipped" in x]
    assert len(rl) == 4 and rl[0]["clipped"] == 0.0 and all(x["sample_nll"] > 0 for x in rl)

    b = RunDir(tmp_path / "b").mkdir()

    def killed(step):
        if step == 1:     # after the first of round 0's two steps: the resume needs the old log-probs
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_online(problems, b, cfg, progress=False, echo=lambda x: None, on_step=killed)
    first = json.loads((b.online / "rounds.jsonl").read_text().splitlines()[0])
    train_online(problems, b, cfg, progress=False, echo=lambda x: None)
    wa = load_file(str(a.online / "adapter_model.safetensors"))
    wb = load_file(str(b.online / "adapter_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the resumed round 0 is listed once and keeps the timings its rollout logged before the kill
    rounds = [json.loads(l) for l in (b.online / "rounds.jsonl").read_text().splitlines()]
    assert [x["round"] for x in rounds] == [0, 1]
    assert {"generate_s", "execute_s", "generated_tokens"} <= rounds[0].keys()
    assert rounds[0]["generate_s"] == first["generate_s"]


def test_samples_of_a_model_with_another_tokenizer_are_refused_before_training(tmp_path, tiny_chat_dir):
    """train-expert / train-rl read the samples' raw texts with the init model's tokenizer: when
    their token counts do not match what the generator counted, the samples came from a model with
    another tokenizer — a one-line error before any step."""
    import json as _json

    from coderl.models import load_model
    from coderl.problems.schema import Problem
    from coderl.records import program_hash
    from coderl.rundir import RunDir
    from coderl.training.data import TrainingError
    from coderl.training.expert_config import ExpertConfig
    from coderl.training.expert_trainer import train_expert

    tok = load_model(str(tiny_chat_dir)).tokenizer
    problems = [Problem(id=f"t/{i}", source="jsonl", kind="assert", entry_point="add", question=f"Add {i}.",
                        tests={"asserts": ["assert add(1, 2) == 3"]}) for i in range(6)]
    cfg = ExpertConfig(model=str(tiny_chat_dir), epochs=1, batch_size=2, grad_accum=1, val_source=None,
                       save_every=0, progress=False)
    for factor, ok in ((1, True), (3, False)):
        run = RunDir(tmp_path / f"run{factor}").mkdir()
        samples, results = [], []
        for p in problems:
            prog = "def add(a, b):\n    total = a + b\n    return total\n"
            raw = prog[len("def add("):] + "```"
            n = len(tok(raw, add_special_tokens=False)["input_ids"]) + 1
            samples.append({"problem_id": p.id, "index": 0, "program": prog, "raw": raw, "origin": "sampled",
                            "finish": "stop", "num_tokens": n * factor})
            results.append({"problem_id": p.id, "index": 0, "outcome": "passed", "program_hash": program_hash(prog)})
        run.samples.write_text("".join(_json.dumps(s) + "\n" for s in samples))
        run.results.write_text("".join(_json.dumps(r) + "\n" for r in results))
        if ok:
            assert train_expert(problems, run, cfg, progress=False, echo=lambda x: None)["complete"]
        else:
            with pytest.raises(TrainingError, match=r"samples.jsonl: its samples were written by a model with another tokenizer"):
                train_expert(problems, run, cfg, progress=False, echo=lambda x: None)
            assert not run.expert.exists() or not any(run.expert.glob("*.safetensors"))
