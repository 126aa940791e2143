"""Critic sampling (coderl.critic_sampling) on tiny models: the budget, rounds and parents, prefixes
at token boundaries, hidden tests only after the submission, determinism and resume, the repair
model's training pairs, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from coderl.config import ConfigError
from coderl.critic import CriticConfig
from coderl.critic.critic_trainer import train_critic
from coderl.critic_sampling import CriticSamplingConfig
from coderl.critic_sampling import cs_stage
from coderl.critic_sampling.cs_stage import CriticSamplingError, check_same_tokenizer, critic_sample
from coderl.critic_sampling.prefixes import best_cut, raw_prefix, token_ends
from coderl.critic_sampling.repair import feedback, repair_pairs
from coderl.execution.exec_config import ExecConfig
from coderl.execution.pool import Executor
from coderl.records import Sample, join, read_samples
from coderl.rundir import RunDir

from test_critic import toy


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def critics(tmp_path_factory, tiny_chat_dir):
    """A binary and a 4-class head-mode critic of the tiny chat model, trained on toy programs."""
    problems, sp, rp = toy(tmp_path_factory.mktemp("toy"))
    out = {}
    for c in (2, 4):
        run = tmp_path_factory.mktemp(f"critic{c}")
        train_critic(problems, run, CriticConfig(model=str(tiny_chat_dir), num_classes=c, epochs=2, batch_size=8,
                                                 val_fraction=0.25, lr=3e-3, progress=False, bootstrap=10),
                     samples_path=sp, results_path=rp, echo=lambda s: None)
        out[c] = str(run / "critic" / "best")
    return out


def cs_cfg(tiny_chat_dir, critic, **kw) -> CriticSamplingConfig:
    base = dict(model=str(tiny_chat_dir), critic=critic, repair="self", refine_failed=True, budget=6, first=2,
                rounds=2, submit=2, source="mbpp-heldout", split="test", end=3, max_new_tokens=16,
                batch_size=8, progress=False)
    base.update(kw)
    return CriticSamplingConfig(**base)


@pytest.fixture()
def recorded(monkeypatch):
    """Every test set the sandbox is asked to run, and whether the submission existed then."""
    calls: list[tuple[str, bool]] = []
    state = {"subs": None}
    run_many, run = Executor.run_many, Executor.run

    def rec(which):
        calls.append((which, state["subs"] is not None and Path(state["subs"]).is_file()))

    def many(self, items, *a, **k):
        items = list(items)
        for _, _, which in items:
            rec(which)
        return run_many(self, items, *a, **k)

    def one(self, problem, program, tests="hidden", *a, **k):
        rec(tests)
        return run(self, problem, program, tests, *a, **k)

    monkeypatch.setattr(Executor, "run_many", many)
    monkeypatch.setattr(Executor, "run", one)
    return calls, state


def records(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "critic_sampling" / "samples.jsonl").read_text().splitlines()]


def test_budget_rounds_parents_prefixes_and_hidden_tests_only_after_the_submission(
        tmp_path, tiny_chat_dir, critics, recorded):
    calls, state = recorded
    state["subs"] = tmp_path / "critic_sampling" / "submissions.jsonl"
    cfg = cs_cfg(tiny_chat_dir, critics[2])
    summary = critic_sample(RunDir(tmp_path), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    recs = records(tmp_path)
    by_key = {(r["problem_id"], r["index"]): r for r in recs}
    per = {}
    for r in recs:
        per.setdefault(r["problem_id"], []).append(r)
    assert len(per) == 3 and all(len(v) == cfg.budget for v in per.values())  # the budget, spent exactly
    assert summary["programs"] == 18 and summary["problems"] == 3
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(tiny_chat_dir))
    ops = set()
    for r in recs:
        m = r["meta"]
        assert m["round"] in (0, 1, 2) and m["op"] in ("sample", "refine", "repair")
        ops.add(m["op"])
        if m["round"] == 0:
            assert m["parent"] is None and r["origin"] == "sampled"
            continue
        if m["op"] == "sample":
            continue
        parent = by_key[(r["problem_id"], m["parent"])]
        assert parent["meta"]["round"] < m["round"]                  # a parent of an earlier round
        if m["op"] == "refine":
            assert r["origin"] == "refined"
            prefix = parent["raw"][:m["prefix_chars"]]
            assert r["raw"].startswith(prefix) and 0 < m["prefix_chars"] < len(parent["raw"])
            ids = tok(parent["raw"], add_special_tokens=False).input_ids   # cut at a token boundary
            assert any(tok.decode(ids[:n]) == prefix for n in range(1, len(ids) + 1))
        else:
            assert r["origin"] == "repaired" and "This attempt is wrong" in r["prompt"]
            assert parent["program"].rstrip()[:40] in r["prompt"]
    assert {"refine", "repair"} <= ops
    # the sandbox: example tests while sampling, hidden tests only once the submission was written
    assert [w for w, _ in calls if w == "example"] and [w for w, _ in calls if w == "hidden"]
    assert all(done for w, done in calls if w == "hidden")
    first_hidden = next(i for i, (w, _) in enumerate(calls) if w == "hidden")
    assert all(w == "example" and not done for w, done in calls[:first_hidden])
    subs = [json.loads(l) for l in state["subs"].read_text().splitlines()]
    assert len(subs) == 3 and all(1 <= len(s["submitted"]) <= cfg.submit for s in subs)
    rep = json.loads((tmp_path / "critic_sampling" / "report.json").read_text())
    assert set(rep["summary"]) >= {"1@6", "2@6", "pass@6", "hack_rate", "tokens"}
    assert sum(c["programs"] for c in rep["budget_use"].values()) == 18
    # the report's numbers, counted by hand from the records
    hidden = {(r["problem_id"], r["index"]): r["outcome"] == "passed" for r in
              map(json.loads, (tmp_path / "critic_sampling" / "results.jsonl").read_text().splitlines())}
    example = {(r["problem_id"], r["index"]): r["outcome"] == "passed" for r in
               map(json.loads, (tmp_path / "critic_sampling" / "examples.jsonl").read_text().splitlines())}
    for sub in subs:
        pid, p = sub["problem_id"], rep["per_problem"][sub["problem_id"]]
        assert p["1@6"] == hidden[(pid, sub["submitted"][0])]
        assert p["2@6"] == any(hidden[(pid, i)] for i in sub["submitted"][:2])
        assert p["pass@6"] == any(v for (q, _), v in hidden.items() if q == pid)
        if sub["basis"] == "examples":
            assert all(example[(pid, i)] for i in sub["submitted"])
    ex_pass = [k for k, v in example.items() if v]
    hack = sum(not hidden[k] for k in ex_pass)
    assert rep["summary"]["hack_rate"] == (round(100 * hack / len(ex_pass), 2) if ex_pass else None)
    assert (tmp_path / "critic_sampling" / "report.md").read_text().startswith("# critic sampling")


def test_same_seed_same_records_and_a_killed_run_resumes_to_them(tmp_path, tiny_chat_dir, critics, monkeypatch):
    cfg = cs_cfg(tiny_chat_dir, critics[2])
    critic_sample(RunDir(tmp_path / "a"), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    real = cs_stage._generate
    calls = {"n": 0}

    def dies_in_round_1(plan, models, c, rnd):
        if rnd == 1:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt  # killed mid-run
        return real(plan, models, c, rnd)

    monkeypatch.setattr(cs_stage, "_generate", dies_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        critic_sample(RunDir(tmp_path / "b"), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    assert {r["meta"]["round"] for r in records(tmp_path / "b")} == {0}
    # a torn round left behind (records written, its line not): dropped and drawn again
    with open(tmp_path / "b" / "critic_sampling" / "samples.jsonl", "a") as fh:
        fh.write(json.dumps({**records(tmp_path / "a")[-1]}) + "\n")
    critic_sample(RunDir(tmp_path / "b"), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    key = lambda r: (r["problem_id"], r["index"])
    assert sorted(a, key=key) == sorted(b, key=key)
    subs = lambda p: (p / "critic_sampling" / "submissions.jsonl").read_text()
    assert subs(tmp_path / "a") == subs(tmp_path / "b")


def test_plain_sampling_is_the_same_procedure_without_rounds(tmp_path, tiny_chat_dir, critics):
    cfg = cs_cfg(tiny_chat_dir, critics[2], first=4, budget=4, rounds=0, refine=False, repair="none")
    critic_sample(RunDir(tmp_path), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    recs = records(tmp_path)
    assert len(recs) == 12 and {r["origin"] for r in recs} == {"sampled"}


def test_problems_without_example_tests_fall_back_to_the_critic(tmp_path, tiny_chat_dir, critics, recorded):
    calls, _ = recorded
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x/1", "source": "jsonl", "kind": "assert", "entry_point": "add",
                                "question": "Write a function add(a, b).",
                                "tests": {"asserts": ["assert add(1, 2) == 3"]}}) + "\n")
    cfg = cs_cfg(tiny_chat_dir, critics[2], source=str(path), split=None, end=None)
    critic_sample(RunDir(tmp_path / "run"), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    recs = records(tmp_path / "run")
    assert len(recs) == 6 and "repaired" not in {r["origin"] for r in recs}  # nothing to repair against
    assert "example" not in {w for w, _ in calls}
    sub = json.loads((tmp_path / "run" / "critic_sampling" / "submissions.jsonl").read_text())
    assert sub["basis"] == "critic" and sub["candidates"] == 6


def test_a_prompt_longer_than_max_prompt_tokens_is_not_refined(tmp_path, tiny_chat_dir, critics):
    cfg = cs_cfg(tiny_chat_dir, critics[2], repair="none", max_prompt_tokens=8, end=1, budget=4, first=2, rounds=1)
    critic_sample(RunDir(tmp_path), cfg, ExecConfig(), progress=False, echo=lambda s: None)
    assert {r["origin"] for r in records(tmp_path)} == {"sampled"} and len(records(tmp_path)) == 4


def test_a_four_class_critic_is_used_through_p_passed_with_a_warning(tmp_path, tiny_chat_dir, critics):
    said = []
    cfg = cs_cfg(tiny_chat_dir, critics[4], budget=2, first=2, rounds=0, repair="none", end=1)
    critic_sample(RunDir(tmp_path), cfg, ExecConfig(), progress=False, echo=said.append)
    assert any("4-class critic" in s and "P(passed)" in s for s in said)


def test_bad_inputs(tmp_path, tiny_chat_dir, critics):
    with pytest.raises(ConfigError, match="first"):
        CriticSamplingConfig(budget=4, first=5)
    with pytest.raises(CriticSamplingError, match="trained on"):
        critic_sample(RunDir(tmp_path), cs_cfg(tiny_chat_dir, critics[2]), ExecConfig(),
                      train_ids={"mbpp/11"}, echo=lambda s: None)
    with pytest.raises(CriticSamplingError, match="train-repair"):
        critic_sample(RunDir(tmp_path), cs_cfg(tiny_chat_dir, critics[2], repair="run"), ExecConfig(),
                      echo=lambda s: None)
    from coderl.critic.data import CriticError
    with pytest.raises(CriticError, match="no such critic"):
        critic_sample(RunDir(tmp_path), cs_cfg(tiny_chat_dir, str(tmp_path / "nope")), ExecConfig(),
                      echo=lambda s: None)
    a = SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}))
    b = SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0}))
    with pytest.raises(CriticSamplingError, match="another tokenizer"):
        check_same_tokenizer(a, b, "actor", "other")


def test_best_cut_and_raw_prefix():
    program = "def f(a):\n    x = a + 1\n    return x\n"
    offsets = np.array([[0, 3], [3, 5], [5, 9], [9, 10], [10, 16], [16, 18], [18, 23], [23, 24], [24, 34], [34, 37]])
    assert "".join(program[a:b] for a, b in offsets) == program
    q = np.array([0.1, 0.2, 0.3, 0.2, 0.5, 0.9, 0.1, 0.1, 0.2, 0.99])  # the last token never counts
    assert best_cut(program, offsets, q, "token") == 18
    assert best_cut(program, offsets, q, "line") == program.index("    return")  # its line, newline kept
    assert best_cut(program, offsets[:1], q[:1]) is None
    raw = "a):\n    x = a + 1\n    return x\n```"   # a chat prompt pre-filled "def f("
    assert raw_prefix(raw, program, 18, "def f(") == raw[:raw.index("a + 1")] and raw.startswith(raw_prefix(raw, program, 18, "def f("))
    assert raw_prefix(raw, program, 18, "def f(", token_ends=[2, 6, 10]) == raw[:10]
    assert raw_prefix("something else", program, 18) is None
    # only what the model wrote can be cut: not the prompt's pre-filled start, nor code that
    # extraction put before it (HumanEval: the prompt's signature and docstring)
    from coderl.critic_sampling.prefixes import written_from
    assert written_from(program, raw, "def f(") == len("def f(")
    doc = 'def f(a):\n    """Add one."""\n'
    prog2 = doc + "    x = a + 1\n    return x\n"
    assert written_from(prog2, "    x = a + 1\n    return x\n```") == len(doc)
    assert best_cut(program, offsets, q, "token", start=24) == 34   # the best token from char 24 on
    assert best_cut(program, offsets, q, "token", start=37) is None


def test_repair_pairs_and_feedback(tmp_path):
    problems, sp, rp = toy(tmp_path, n_problems=3, per=8)
    pairs, counts = repair_pairs(problems, join(sp, rp), max_per_problem=2)
    assert counts["pairs"] == len(pairs) == 6
    for problem, fb, target, info in pairs:
        assert info["outcome"] != "passed" and "This attempt is wrong" in fb
        assert "return sorted(nums)" in target  # a passing program of the same problem
    assert "line 3" in feedback("x", {"outcome": "runtime_error", "error_type": "ValueError",
                                      "error_message": "bad", "error_line": 3})


def test_train_repair_trains_on_failed_to_passing_pairs(tmp_path, tiny_chat_dir):
    from coderl.critic_sampling.repair_config import RepairConfig
    from coderl.critic_sampling.repair_trainer import train_repair
    from coderl.models import load_model

    problems, sp, rp = toy(tmp_path / "run", n_problems=3, per=8)
    cfg = RepairConfig(model=str(tiny_chat_dir), epochs=1, grad_accum=2, max_pairs=2, progress=False,
                       save_every=0)
    s = train_repair(problems, RunDir(tmp_path / "run"), cfg, progress=False, echo=lambda x: None)
    assert s["complete"]
    data = [json.loads(l) for l in (tmp_path / "run" / "repair" / "data.jsonl").read_text().splitlines()]
    assert len(data) == 6 and {d["origin"] for d in data} == {"repair"}
    lm = load_model(str(tmp_path / "run" / "repair"))
    assert lm.tokenizer.get_vocab() == load_model(str(tiny_chat_dir)).tokenizer.get_vocab()
