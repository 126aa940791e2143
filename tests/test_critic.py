"""The critic (coderl.critic) on tiny models: training data, token alignment, learning a separable
toy labelling (causal and T5), save/load, resume after a kill, scoring, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from coderl.config import ConfigError
from coderl.critic import CriticConfig, ScoreConfig
from coderl.critic.critic_trainer import BEST_DIR, CRITIC_DIR, METRICS_FILE, checkpoints, train_critic
from coderl.critic.data import CriticError, build_training_data, split_problems, split_problems3
from coderl.critic.features import compiles, program_features
from coderl.critic.metrics import bootstrap_auroc_diff, classification_metrics, ranking
from coderl.critic.model import CriticModel
from coderl.critic.scores import SCORES_FILE, read_scores
from coderl.critic.scoring import rank_by_critic, score
from coderl.io import RecordError
from coderl.records import program_hash
from coderl.problems.schema import Problem

# each outcome has a marker line; two filler lines drawn from a shared pool make the programs vary
MARK = {"passed": "    return sorted(nums)\n", "failed": "    print(i)\n",
        "runtime_error": "import sys\n", "compile_error": "class Solution:\n"}
FILL = ["    x = a + b\n", "    if i % 2 == 0:\n        pass\n", "    n = int(n)\n",
        "    s = s.replace(ch, '')\n", "    for i in range(10):\n        pass\n"]


def toy(tmp: Path, n_problems: int = 12, per: int = 8, seed: int = 0, outcomes=tuple(MARK)):
    """Problems, samples.jsonl and results.jsonl with a labelling a critic can learn exactly."""
    rng = random.Random(seed)
    problems, samples, results = [], [], []
    for p in range(n_problems):
        pid = f"toy/{p}"
        problems.append(Problem(id=pid, source="jsonl", kind="assert", entry_point="add",
                                question=f"Write a python function number {p} to add a and b.",
                                tests={"asserts": ["assert add(1, 2) == 3"]},
                                solutions=["def add(a, b):\n" + MARK["passed"]]))
        for i in range(per):
            o = outcomes[(i + p) % len(outcomes)]
            a, b = rng.sample(FILL, 2)
            samples.append({"problem_id": pid, "index": i, "program": "def add(a, b):\n" + a + MARK[o] + b,
                            "origin": "greedy" if i == per - 1 else "sampled", "prompt": "..."})
            results.append({"problem_id": pid, "index": i, "outcome": o, "tests_passed": int(o == "passed"),
                            "tests_total": 1, "program_hash": program_hash(samples[-1]["program"])})
    tmp.mkdir(parents=True, exist_ok=True)
    write(tmp / "samples.jsonl", samples)
    write(tmp / "results.jsonl", results)
    return problems, tmp / "samples.jsonl", tmp / "results.jsonl"


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def cfg(model_dir, **kw) -> CriticConfig:
    base = dict(model=str(model_dir), epochs=4, batch_size=8, val_fraction=0.25, lr=3e-3,
                progress=False, bootstrap=100)
    base.update(kw)
    return CriticConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine two threads spin against each
    other (a T5 step: 0.44 s with 2 threads, 0.01 s with 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_chat_dir, toy_data):
    """A 4-class critic, head mode (cached features), on the causal tiny model with a chat template."""
    problems, sp, rp = toy_data
    run = tmp_path_factory.mktemp("run")
    summary = train_critic(problems, run, cfg(tiny_chat_dir, epochs=6), samples_path=sp, results_path=rp,
                           echo=lambda s: None)
    return run, summary


# -- training data ------------------------------------------------------------------------------------
def test_data_join_gold_greedy_and_split_by_problem(toy_data):
    problems, sp, rp = toy_data
    data = build_training_data(problems, sp, rp, val_fraction=0.25, split_seed=0)
    train_p = {e.problem_id for e in data.train}
    val_p = {e.problem_id for e in data.validation}
    assert train_p and val_p and not train_p & val_p        # no problem straddles the split
    assert len(val_p) == 3
    gold = [e for e in data.train if e.origin == "gold"]
    assert len(gold) == len(train_p) and all(e.outcome == "passed" and e.index < 0 for e in gold)
    assert not any(e.origin == "gold" for e in data.validation)    # held-out: generated programs only
    assert sum(e.origin == "greedy" for e in data.examples) == 12   # greedy programs kept
    assert len(data.examples) == 12 * 8 + len(train_p)
    # the split is seeded and deterministic
    assert split_problems([p.id for p in problems], 0.25, 0) == val_p
    assert split_problems([p.id for p in problems], 0.25, 1) != val_p
    with_gold = build_training_data(problems, sp, rp, val_fraction=0.25, gold_in_validation=True)
    assert sum(e.origin == "gold" for e in with_gold.validation) == 3


def test_a_test_split_is_disjoint_and_leaves_validation_unchanged(toy_data):
    problems, sp, rp = toy_data
    ids = [p.id for p in problems]
    val, test = split_problems3(ids, 0.25, 0.25, 0)
    assert val == split_problems(ids, 0.25, 0)          # adding a test split moves no validation problem
    assert len(test) == 3 and not val & test
    data = build_training_data(problems, sp, rp, val_fraction=0.25, test_fraction=0.25)
    parts = [{e.problem_id for e in exs} for exs in (data.train, data.validation, data.test)]
    assert parts[1] == val and parts[2] == test and not parts[0] & (val | test)
    assert not any(e.origin == "gold" for e in data.validation + data.test)
    assert data.summary()["test"]["problems"] == 3
    with pytest.raises(ConfigError, match=r"critic\.test_fraction: val_fraction \+ test_fraction"):
        CriticConfig(val_fraction=0.5, test_fraction=0.5)


def test_validation_folds_are_disjoint_and_cover_every_problem(toy_data):
    problems, sp, rp = toy_data
    ids = [p.id for p in problems]
    folds = [split_problems3(ids, 0.25, 0.0, 0, fold=k)[0] for k in range(4)]
    assert folds[0] == split_problems(ids, 0.25, 0)
    assert all(len(f) == 3 for f in folds) and set().union(*folds) == set(ids)
    assert all(not folds[i] & folds[j] for i in range(4) for j in range(i + 1, 4))
    with pytest.raises(ConfigError, match=r"critic\.val_fold: 4 is past the last fold \(3\)"):
        CriticConfig(val_fraction=0.25, val_fold=4)


def test_best_metric_last_keeps_the_last_epoch(tmp_path, tiny_chat_dir, toy_data):
    problems, sp, rp = toy_data
    s = train_critic(problems, tmp_path / "run", cfg(tiny_chat_dir, epochs=3, best_metric="last", val_fold=1),
                     samples_path=sp, results_path=rp, echo=lambda s: None)
    assert s["best_epoch"] == 3
    val = {p["problem_id"] for p in map(json.loads, (tmp_path / "run" / CRITIC_DIR / "val_predictions.jsonl")
                                        .read_text().splitlines())}
    assert val == split_problems3([p.id for p in problems], 0.25, 0.0, 0, fold=1)[0]


def test_with_a_test_split_the_best_epoch_is_reported_on_test(tmp_path, tiny_chat_dir, toy_data):
    problems, sp, rp = toy_data
    s = train_critic(problems, tmp_path / "run", cfg(tiny_chat_dir, epochs=3, test_fraction=0.25),
                     samples_path=sp, results_path=rp, echo=lambda s: None)
    assert s["data"]["test"]["programs"] == 24 and s["test"]["n"] == 24
    assert s["bootstrap_auroc_diff"]["split"] == "test"
    assert set(s["baselines_test"]) == {"majority", "features"}
    m = json.loads((tmp_path / "run" / CRITIC_DIR / METRICS_FILE).read_text())
    best = [h for h in m["history"] if h["epoch"] == s["best_epoch"]][0]
    assert best["test"] == s["test"] and best["validation"] == s["validation"]
    preds = [json.loads(x) for x in (tmp_path / "run" / CRITIC_DIR / "val_predictions.jsonl").read_text().splitlines()]
    assert {p["split"] for p in preds} == {"validation", "test"}


def test_bad_inputs_name_the_file_and_record(tmp_path, toy_data):
    problems, sp, rp = toy_data
    lines = rp.read_text().splitlines()
    # a result without a sample
    extra = json.loads(lines[0])
    extra["index"] = 99
    (tmp_path / "r1.jsonl").write_text("\n".join(lines + [json.dumps(extra)]) + "\n")
    with pytest.raises(RecordError, match=r"r1\.jsonl:97: result for \(problem_id='toy/0', index=99\) "
                                          r"has no sample"):
        build_training_data(problems, sp, tmp_path / "r1.jsonl")
    # a sample without a result
    (tmp_path / "r2.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(RecordError, match=r"samples\.jsonl:1: sample \(problem_id='toy/0', index=0\) "
                                          r"has no result in .*r2\.jsonl"):
        build_training_data(problems, sp, tmp_path / "r2.jsonl")
    # an unknown outcome label
    bad = json.loads(lines[3])
    bad["outcome"] = "timeout"
    (tmp_path / "r3.jsonl").write_text("\n".join(lines[:3] + [json.dumps(bad)] + lines[4:]) + "\n")
    with pytest.raises(RecordError, match=r"r3\.jsonl:4: unknown outcome 'timeout'"):
        build_training_data(problems, sp, tmp_path / "r3.jsonl")
    # an empty training set
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CriticError, match=r"empty training set: no programs in .*empty\.jsonl"):
        build_training_data(problems, tmp_path / "empty.jsonl", tmp_path / "empty.jsonl", include_gold=False)
    # no passed program in a split: an error; in one problem: a warning (an error with require_pass)
    nopass_p, nsp, nrp = toy(tmp_path / "nopass", n_problems=4, outcomes=("failed", "runtime_error"))
    with pytest.raises(CriticError, match=r"results\.jsonl: the validation split .* has no passed program"):
        build_training_data(nopass_p, nsp, nrp, val_fraction=0.25)
    data = build_training_data(nopass_p, nsp, nrp, val_fraction=0.0, include_gold=True)
    assert not data.warnings  # gold programs give every training problem a passed one
    for p in nopass_p[1:]:
        p.solutions = []
    data = build_training_data(nopass_p, nsp, nrp, val_fraction=0.0)
    assert len(data.warnings) == 3 and "problem 'toy/1' (train) has no passed program" in data.warnings[0]
    with pytest.raises(CriticError, match=r"results\.jsonl: problem 'toy/1' \(train\) has no passed "
                                          r"program.*require_pass"):
        build_training_data(nopass_p, nsp, nrp, val_fraction=0.0, require_pass=True)
    # bad config values name the key
    with pytest.raises(ConfigError, match=r"critic\.num_classes: 3 is not one of \[2, 4\]"):
        CriticConfig(num_classes=3)
    with pytest.raises(ConfigError, match=r"critic\.val_fraction: must be < 1"):
        CriticConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match=r"critic_score\.batch_size: must be >= 1"):
        ScoreConfig(batch_size=0)


# -- token alignment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["causal", "t5"])
def test_token_values_cover_program_tokens_only(which, tiny_chat_dir, tiny_t5_dir, toy_data):
    problems = toy_data[0]
    critic = CriticModel.build(str(tiny_chat_dir if which == "causal" else tiny_t5_dir), num_classes=4)
    programs = ["def add(a, b):\n    return a + b\n", "print(1)", "x = 1\n" * 7]
    items = [critic.encode(critic.context(problems[i % 2]), p) for i, p in enumerate(programs)]
    for side in ("left", "right"):
        batch = critic.collate(items, padding_side=side)
        stream = batch["decoder_input_ids"] if which == "t5" else batch["input_ids"]
        for row, e in enumerate(items):
            m = batch["program_mask"][row]
            assert stream[row][m].tolist() == e.prog_ids     # exactly the program's tokens, in order
            assert int(m.sum()) == len(e.prog_ids)
        if which == "causal":  # prompt and padding positions carry no value
            pad = batch["attention_mask"] == 0
            assert not (batch["program_mask"] & pad).any()
    ref = [critic.score([e], share_prompt=False)[0] for e in items]   # each alone, no padding
    for side in ("left", "right"):
        critic.settings.padding_side = side
        for share in (False, True):
            got = critic.score(items, share_prompt=share)
            for (p0, t0), (p1, t1), e in zip(ref, got, items):
                assert t1.shape == (len(e.prog_ids), 4)
                torch.testing.assert_close(t1, t0, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(p1, p0, atol=1e-5, rtol=1e-4)
    # offsets map every value back to the program text
    for p, e in zip(programs, items):
        assert "".join(p[s:t] for s, t in e.offsets) == p


# -- learning -----------------------------------------------------------------------------------------
def test_causal_critic_learns_toy_labelling(trained):
    run, s = trained
    assert s["complete"] and s["epochs_done"] == 6
    v = s["validation"]
    assert v["accuracy"] >= 0.95 and v["auroc"] >= 0.99 and v["macro_f1"] >= 0.95
    assert len(v["confusion"]) == 4 and sum(map(sum, v["confusion"])) == v["n"] == 24
    assert s["baselines"]["majority"]["accuracy"] == 0.25 and s["baselines"]["majority"]["auroc"] == 0.5
    assert "auroc" in s["baselines"]["features"]
    b = s["bootstrap_auroc_diff"]
    assert b["resamples"] + b["skipped"] == 100 and b["low"] <= b["diff"] <= b["high"]
    crit = run / CRITIC_DIR
    m = json.loads((crit / METRICS_FILE).read_text())
    assert m["complete"] and len(m["history"]) == 6 and all("validation" in h for h in m["history"])
    log = [json.loads(x) for x in (crit / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "eval"] == [1, 2, 3, 4, 5, 6]
    assert list((crit / "tb").glob("events.out.tfevents.*"))
    assert (crit / BEST_DIR / "critic_head.safetensors").is_file()
    assert len(list((crit / "features").glob("part-*.pt"))) == 1


@pytest.mark.parametrize("which", ["t5"])
def test_t5_critic_learns_toy_labelling(which, tmp_path, tiny_t5_dir):
    problems, sp, rp = toy(tmp_path / "d", outcomes=("passed", "failed"))
    s = train_critic(problems, tmp_path / "run", cfg(tiny_t5_dir, num_classes=2, mode="full", epochs=4,
                                                     lr=3e-3, max_context_tokens=24),
                     samples_path=sp, results_path=rp,
                     echo=lambda s: None)
    assert s["validation"]["accuracy"] >= 0.95 and s["validation"]["auroc"] >= 0.99
    assert len(s["validation"]["confusion"]) == 2


# -- save / load, scoring -----------------------------------------------------------------------------
def test_save_load_roundtrip_gives_identical_scores(tmp_path, trained, tiny_chat_dir, tiny_t5_dir, toy_data):
    run, _ = trained
    problems = toy_data[0]
    programs = ["def add(a, b):\n    return sorted(nums)\n", "class Solution:\n    pass\n"]
    loaded = CriticModel.from_pretrained(run / CRITIC_DIR / BEST_DIR)
    critics = [loaded,
               CriticModel.build(str(tiny_chat_dir), num_classes=2, mode="lora", lora_r=4, seed=1),
               CriticModel.build(str(tiny_t5_dir), num_classes=4, mode="top", top_layers=1, seed=2)]
    with torch.no_grad():  # make the LoRA adapters and the top layers differ from the base model
        for c in critics[1:]:
            for p in c.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
    for i, c in enumerate(critics):
        items = [c.encode(c.context(problems[0]), p) for p in programs]
        before = c.score(items)
        c.save_pretrained(tmp_path / f"c{i}")
        again = CriticModel.from_pretrained(tmp_path / f"c{i}")
        assert again.settings == c.settings
        for (p0, t0), (p1, t1) in zip(before, again.score(items)):
            assert torch.equal(p0, p1) and torch.equal(t0, t1)
    assert (tmp_path / "c1" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "c2" / "backbone" / "config.json").is_file()
    assert not (tmp_path / "c0" / "backbone").exists()  # head mode refers to the backbone


def test_scoring_writes_token_values_and_resumes(tmp_path, trained, toy_data):
    run, _ = trained
    problems, sp, rp = toy_data
    lines = sp.read_text().splitlines()
    part = tmp_path / "samples.jsonl"
    part.write_text("\n".join(lines[:40]) + "\n")
    first = score(problems, run, ScoreConfig(progress=False), samples_path=part, results_path=None,
                  out_path=tmp_path / SCORES_FILE)
    assert first["scored"] == 40
    s0 = read_scores(tmp_path / SCORES_FILE)
    assert all(np.isnan(v.q_outcome.astype(np.float32)).all() for v in s0.values())  # no results yet
    full = score(problems, run, ScoreConfig(progress=False), samples_path=sp, results_path=rp,
                 out_path=tmp_path / SCORES_FILE)
    assert full["samples"] == 96 and full["scored"] == 96  # the 40 again: their outcomes are known now
    again = score(problems, run, ScoreConfig(progress=False), samples_path=sp, results_path=rp,
                  out_path=tmp_path / SCORES_FILE)
    assert again["scored"] == 0 and again["skipped_done"] == 96
    scores = read_scores(tmp_path / SCORES_FILE)
    samples = {(r["problem_id"], r["index"]): r for r in map(json.loads, lines)}
    results = {(r["problem_id"], r["index"]): r for r in map(json.loads, rp.read_text().splitlines())}
    assert set(scores) == set(samples)
    for key, v in scores.items():
        prog = samples[key]["program"]
        assert v.probs.dtype == np.float16 and v.q_pass.dtype == np.float16 and v.probs.shape == (4,)
        assert len(v.q_pass) == len(v.q_outcome) == len(v.offsets) > 0
        assert "".join(prog[s:e] for s, e in v.offsets) == prog
        assert v.outcome == results[key]["outcome"]
        assert abs(float(v.probs.astype(np.float32).sum()) - 1) < 1e-2
    # the critic learnt the labelling: q̂ of the actual outcome is high on the marker's tokens
    v = scores[("toy/0", 0)]
    assert v.p_pass > 0.5 and v.outcome == "passed"
    r = rank_by_critic(sp, rp, tmp_path / SCORES_FILE, origins=("sampled", "greedy"))
    assert r["top1"] == 100.0 and r["oracle"] == 100.0 and r["random"] == 25.0
    # scores of another critic are not mixed in
    other = tmp_path / "other"
    c = CriticModel.from_pretrained(run / CRITIC_DIR / BEST_DIR)
    with torch.no_grad():
        c.head.net[0].bias.add_(1.0)
    c.save_pretrained(other)
    with pytest.raises(ConfigError, match="holds scores of another critic"):
        score(problems, run, ScoreConfig(checkpoint=str(other), progress=False), samples_path=sp,
              results_path=rp, out_path=tmp_path / SCORES_FILE)


def test_a_head_critic_scores_its_training_programs_from_its_feature_cache(tmp_path, trained, toy_data):
    """The cached hidden states give the scores a fresh backbone pass gives (float16 apart), and
    a program the critic never saw goes through the backbone."""
    run, _ = trained
    problems, sp, rp = toy_data
    lines = sp.read_text().splitlines()
    unseen = json.loads(lines[0])
    unseen.update(index=500, program=unseen["program"] + "    y = 2\n")
    part = tmp_path / "samples.jsonl"
    part.write_text("\n".join(lines[:20] + [json.dumps(unseen)]) + "\n")
    cached = score(problems, run, ScoreConfig(progress=False), samples_path=part, out_path=tmp_path / "a.npz")
    fresh = score(problems, run, ScoreConfig(progress=False, reuse_features=False), samples_path=part,
                  out_path=tmp_path / "b.npz")
    assert cached["from_cache"] == 20 and fresh["from_cache"] == 0
    a, b = read_scores(tmp_path / "a.npz"), read_scores(tmp_path / "b.npz")
    assert list(a) == list(b)
    for k in a:
        assert np.allclose(a[k].q_pass.astype(np.float32), b[k].q_pass.astype(np.float32), atol=1e-2)
        assert np.array_equal(a[k].offsets, b[k].offsets)
    # the same problems shown otherwise (another prompt variant: mbpp vs mbpp-heldout) are another
    # input: their programs go through the backbone, not the cache of the variant trained on
    import dataclasses

    shown = [dataclasses.replace(p, question=p.question + " Only the first test is shown.") for p in problems]
    other = score(shown, run, ScoreConfig(progress=False), samples_path=part, out_path=tmp_path / "c.npz")
    assert other["from_cache"] == 0
    assert np.array_equal(a[("toy/0", 500)].q_pass, b[("toy/0", 500)].q_pass)  # both ran the backbone


# -- resume -------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def test_killed_scoring_resumes(tmp_path, trained, toy_data, monkeypatch):
    from coderl.critic import scoring

    run, _ = trained
    problems, sp, rp = toy_data
    ref = score(problems, run, ScoreConfig(progress=False, reuse_features=False), samples_path=sp, results_path=rp,
                out_path=tmp_path / "ref.npz")
    monkeypatch.setattr(scoring, "CHUNK", 16)
    calls, real = [], CriticModel.score

    def killed_score(self, items, **kw):
        calls.append(len(items))
        if len(calls) == 3:
            raise Killed
        return real(self, items, **kw)

    monkeypatch.setattr(CriticModel, "score", killed_score)
    with pytest.raises(Killed):
        score(problems, run, ScoreConfig(progress=False, reuse_features=False), samples_path=sp, results_path=rp,
              out_path=tmp_path / SCORES_FILE)
    assert len(list((tmp_path / (SCORES_FILE + ".parts")).glob("part-*.npz"))) == 2
    got = score(problems, run, ScoreConfig(progress=False, reuse_features=False), samples_path=sp, results_path=rp,
                out_path=tmp_path / SCORES_FILE)
    assert got["skipped_done"] == 32 and got["scored"] == 64 and ref["scored"] == 96
    assert not (tmp_path / (SCORES_FILE + ".parts")).exists()
    a, b = read_scores(tmp_path / "ref.npz"), read_scores(tmp_path / SCORES_FILE)
    assert list(a) == list(b)  # the samples' order
    for k in a:
        assert np.array_equal(a[k].q_pass, b[k].q_pass) and np.array_equal(a[k].probs, b[k].probs)
        assert np.array_equal(a[k].offsets, b[k].offsets)


@pytest.mark.parametrize("mode", ["head", "lora", "full"])
def test_killed_training_resumes_to_the_same_result(mode, tmp_path, tiny_chat_dir, tiny_t5_dir, toy_data):
    problems, sp, rp = toy_data
    # 81 training programs, 21 micro-batches, 11 steps per epoch; killed at step 7, after the
    # checkpoint of step 6
    extra = dict(mode=mode, epochs=2, save_every=2, grad_accum=2, batch_size=4, keep_checkpoints=2,
                 max_context_tokens=24)
    if mode == "lora":
        extra.update(lora_r=4, lora_dropout=0.2, lr=1e-2)  # dropout: the RNG state must come back
    model = tiny_t5_dir if mode == "full" else tiny_chat_dir  # T5: dropout 0.1 in every layer
    c = cfg(model, **extra)
    ref = train_critic(problems, tmp_path / "ref", c, samples_path=sp, results_path=rp, echo=lambda s: None)

    def kill_at(step):
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp, on_step=kill_at,
                     echo=lambda s: None)
    assert [p.name for p in checkpoints(tmp_path / "run")][-1] == "step-000006"
    msgs = []
    got = train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp, echo=msgs.append)
    assert any("resuming from step-000006" in m for m in msgs)
    assert got["steps"] == ref["steps"] and got["validation"] == ref["validation"]
    assert got["bootstrap_auroc_diff"] == ref["bootstrap_auroc_diff"]
    a = json.loads((tmp_path / "ref" / CRITIC_DIR / METRICS_FILE).read_text())["history"]
    b = json.loads((tmp_path / "run" / CRITIC_DIR / METRICS_FILE).read_text())["history"]
    assert a == b
    from safetensors.torch import load_file

    for sub in [BEST_DIR] + [f"checkpoints/{p.name}" for p in checkpoints(tmp_path / "ref")]:
        wa = load_file(str(tmp_path / "ref" / CRITIC_DIR / sub / "critic_head.safetensors"))
        wb = load_file(str(tmp_path / "run" / CRITIC_DIR / sub / "critic_head.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if mode != "head":
        f = "adapter/adapter_model.safetensors" if mode == "lora" else "backbone/model.safetensors"
        wa = load_file(str(tmp_path / "ref" / CRITIC_DIR / BEST_DIR / f))
        wb = load_file(str(tmp_path / "run" / CRITIC_DIR / BEST_DIR / f))
        assert wa and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the log holds each step once
    log = [json.loads(x) for x in (tmp_path / "run" / CRITIC_DIR / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["event"] == "step"]
    assert steps == sorted(set(steps))
    # a finished run returns its summary; another config is refused
    assert train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp) == got
    with pytest.raises(ConfigError, match=r"another config.*epochs: 2 -> 3"):
        train_critic(problems, tmp_path / "run", cfg(model, **{**extra, "epochs": 3}),
                     samples_path=sp, results_path=rp)


def test_killed_feature_caching_resumes(tmp_path, tiny_chat_dir, toy_data, monkeypatch):
    from coderl.critic import feature_cache

    problems, sp, rp = toy_data
    c = cfg(tiny_chat_dir, epochs=2, max_context_tokens=24)
    ref = train_critic(problems, tmp_path / "ref", c, samples_path=sp, results_path=rp, echo=lambda s: None)
    monkeypatch.setattr(feature_cache, "FEATURE_CHUNK", 16)
    calls, kill = [], [True]
    real = CriticModel.program_hidden

    def program_hidden(self, items, **kw):
        calls.append(len(items))
        if len(calls) == 3 and kill[0]:
            raise Killed
        return real(self, items, **kw)

    monkeypatch.setattr(CriticModel, "program_hidden", program_hidden)
    with pytest.raises(Killed):
        train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp, echo=lambda s: None)
    parts = sorted((tmp_path / "run" / CRITIC_DIR / "features").glob("part-*.pt"))
    assert len(parts) == 2
    calls.clear()
    kill[0] = False
    got = train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp, echo=lambda s: None)
    # distinct inputs (context + program token ids: with max_context_tokens 24 the problems'
    # contexts coincide), each computed once; the two finished chunks were not computed again
    distinct = sum(len(torch.load(f, weights_only=True)["keys"])
                   for f in (tmp_path / "run" / CRITIC_DIR / "features").glob("part-*.pt"))
    assert distinct > 32 and sum(calls) == distinct - 32
    assert got["validation"] == ref["validation"] and got["steps"] == ref["steps"]


def test_a_budget_finishes_a_critic_and_a_larger_one_continues_it(tmp_path, tiny_chat_dir, toy_data):
    """max_steps is the Trainer's budget, as for the actor: the run is complete at the budget,
    validated there with its best critic published; the same budget again has nothing to do; a
    larger one continues it to the weights (and epoch metrics) of one uninterrupted run."""
    from safetensors.torch import load_file

    problems, sp, rp = toy_data
    c = cfg(tiny_chat_dir, epochs=2, batch_size=16)   # 81 training programs: 6 steps per epoch
    whole = train_critic(problems, tmp_path / "whole", c, samples_path=sp, results_path=rp, echo=lambda s: None)
    budget = CriticConfig(**{**c.__dict__, "max_steps": 3})
    s = train_critic(problems, tmp_path / "run", budget, samples_path=sp, results_path=rp, echo=lambda s: None)
    assert s["complete"] and s["steps"] == 3 and s["epochs_done"] == 0 and s["validation"]["n"] == 24
    crit = tmp_path / "run" / CRITIC_DIR
    m = json.loads((crit / METRICS_FILE).read_text())
    assert m["complete"] and [(h["epoch"], h["step"]) for h in m["history"]] == [(1, 3)]
    assert (crit / BEST_DIR / "critic_head.safetensors").is_file() and (crit / "val_predictions.jsonl").is_file()
    msgs = []
    again = train_critic(problems, tmp_path / "run", budget, samples_path=sp, results_path=rp, echo=msgs.append)
    assert again == s and any("already complete" in x for x in msgs)
    s = train_critic(problems, tmp_path / "run", c, samples_path=sp, results_path=rp, echo=lambda s: None)
    assert s["complete"] and s["steps"] == whole["steps"] == 12 and s["epochs_done"] == 2
    hist = json.loads((crit / METRICS_FILE).read_text())["history"]
    ref = json.loads((tmp_path / "whole" / CRITIC_DIR / METRICS_FILE).read_text())["history"]
    assert [h["step"] for h in hist] == [3, 6, 12]
    drop = lambda h: {k: v for k, v in h.items() if k != "best"}  # noqa: E731
    assert [drop(h) for h in hist[1:]] == [drop(h) for h in ref]  # the budget's validation changed nothing
    a = load_file(str(checkpoints(tmp_path / "whole")[-1] / "critic_head.safetensors"))
    b = load_file(str(checkpoints(tmp_path / "run")[-1] / "critic_head.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- bad input that used to give silent wrong results --------------------------------------------------
def test_a_non_finite_learning_rate_is_a_config_error():
    with pytest.raises(ConfigError, match=r"critic\.lr: must be a finite number > 0, got inf"):
        CriticConfig(lr=float("inf"))
    for lr in (float("nan"), 0, -1e-3):
        with pytest.raises(ConfigError, match=r"critic\.lr"):
            CriticConfig(lr=lr)


def test_nan_loss_stops_the_critic_and_names_the_last_good_checkpoint(tmp_path, tiny_chat_dir, toy_data,
                                                                      monkeypatch):
    from coderl.critic import critic_task
    from coderl.training.data import TrainingError

    problems, sp, rp = toy_data
    real, calls = critic_task.masked_max, {"n": 0}

    def flaky(logits, mask):
        calls["n"] += 1
        out = real(logits, mask)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(critic_task, "masked_max", flaky)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"train-critic: non-finite loss \(nan\) at step 3 .*training "
                                            r"stopped.*last good checkpoint is .*step-000002 \(step 2\).*"
                                            r"critic\.lr, now 0\.003"):
        train_critic(problems, run, cfg(tiny_chat_dir, epochs=1, save_every=1), samples_path=sp,
                     results_path=rp, echo=lambda s: None)
    assert [p.name for p in checkpoints(run)] == ["step-000002"]
    assert not (run / CRITIC_DIR / METRICS_FILE).exists()  # never "complete" with a NaN critic
    CriticModel.from_pretrained(checkpoints(run)[0])  # the checkpoint is a loadable critic


def test_problems_without_samples_warn_and_an_empty_validation_split_is_an_error(tmp_path, tiny_chat_dir):
    problems, sp, rp = toy(tmp_path / "d", n_problems=12)
    # 12 problems selected, 3 sampled, none of them held out: the held-out ones have gold programs only
    held = split_problems([p.id for p in problems], 0.25, 0)
    keep = [p.id for p in problems if p.id not in held][:3]
    for f in (sp, rp):
        f.write_text("".join(l + "\n" for l in f.read_text().splitlines() if json.loads(l)["problem_id"] in keep))
    with pytest.raises(CriticError, match=r"the validation split is empty \(validation fraction 0\.25\): its 3 "
                                          r"problems \(of the 12 with programs\) have no sampled program.*"
                                          r"3 of the 12 selected problems have sampled programs"):
        build_training_data(problems, sp, rp, val_fraction=0.25, split_seed=0)
    with pytest.raises(CriticError, match="validation split is empty"):
        train_critic(problems, tmp_path / "run", cfg(tiny_chat_dir), samples_path=sp, results_path=rp,
                     echo=lambda s: None)
    # with the held-out gold kept there is a validation split, and the warning says what is wrong
    msgs = []
    s = train_critic(problems, tmp_path / "run", cfg(tiny_chat_dir, epochs=1, gold_in_validation=True),
                     samples_path=sp, results_path=rp, echo=msgs.append)
    warning = "only 3 of the 12 selected problems have sampled programs"
    assert any(warning in m for m in msgs) and warning in s["warnings"][0]
    assert warning in json.loads((tmp_path / "run" / CRITIC_DIR / METRICS_FILE).read_text())["warnings"][0]
    assert "warnings" not in train_critic(*toy(tmp_path / "full", n_problems=4)[:1], tmp_path / "ok",
                                          cfg(tiny_chat_dir, epochs=1, val_fraction=0.5),
                                          samples_path=tmp_path / "full" / "samples.jsonl",
                                          results_path=tmp_path / "full" / "results.jsonl", echo=lambda s: None)


# -- metrics and features -----------------------------------------------------------------------------
def test_metrics_bootstrap_and_ranking():
    y = [3, 3, 2, 1, 0, 2]
    probs = np.eye(4)[[3, 3, 2, 1, 0, 3]] * 0.9 + 0.025
    m = classification_metrics(y, probs, 4, 3)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["confusion"][2] == [0, 0, 1, 1]
    assert m["auroc"] == pytest.approx(0.875)
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    yy = [1, 0, 1, 0, 1, 0, 0, 0]
    sa = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.2, 0.1]
    sb = [0.5, 0.5, 0.1, 0.9, 0.5, 0.4, 0.6, 0.2]
    b1 = bootstrap_auroc_diff(groups, yy, sa, sb, resamples=200, seed=0)
    assert b1 == bootstrap_auroc_diff(groups, yy, sa, sb, resamples=200, seed=0)
    assert b1["diff"] > 0 and b1["low"] <= b1["diff"] <= b1["high"]
    r = ranking({"p": [(0.9, True), (0.1, False)], "q": [(0.2, False), (0.2, True)], "r": [(0.5, False)]})
    assert r == {"problems": 3, "top1": 50.0, "random": 33.33, "oracle": 66.67}


def test_program_features():
    assert compiles("x = 1\n") and not compiles("def f(:\n")
    f = program_features("n = int(input())\nprint(n)\n", "abcd" * 10)
    assert f[2:5] == [1.0, 1.0, 1.0] and f[5] == pytest.approx(26 / 40)
