"""coderl.rewards: TRL's reward function (with a real GRPOTrainer run) and veRL's compute_score,
checked against the executor's own verdicts, in this process and through ``serve-executor``."""

from __future__ import annotations

import json
import pickle

import pytest

from coderl import rewards as R
from coderl.execution import ExecConfig, Rewards
from coderl.models.extract import extract_program
from coderl.models.prompts import Prompt
from coderl.problems import ProblemError, load_problems
from coderl.serve.client import ExecutorClient, ServiceError
from coderl.serve.serve_config import ServeConfig
from coderl.serve.server import BackgroundServer

from test_serve import exec_config, hostile_corpus

pytestmark = pytest.mark.timeout(600)

TOKEN = "rewards-test-token"


@pytest.fixture(scope="module", autouse=True)
def _stop_verl_executors():
    yield
    R.close()  # the executors compute_score started in this process


@pytest.fixture(scope="module")
def srv():
    with BackgroundServer(ServeConfig(port=0, token=TOKEN), exec_config()) as s:
        yield s


@pytest.fixture(scope="module")
def native(srv):
    return ExecutorClient(srv.url, token=TOKEN)


@pytest.fixture(scope="module")
def humaneval():
    return load_problems("humaneval")[::12]  # 14 problems


def fenced(program: str) -> str:
    return f"Here is the program:\n```python\n{program}```\nIt works."


# -- TRL ------------------------------------------------------------------------------------------
def test_to_dataset_styles(mbpp_problems, tiny_chat_dir):
    from transformers import AutoTokenizer

    conv = R.to_dataset(mbpp_problems)
    assert conv.column_names == ["prompt", "problem_id"] and len(conv) == len(mbpp_problems)
    assert conv[0]["prompt"][0]["role"] == "user" and conv[0]["problem_id"] == mbpp_problems[0].id
    plain = R.to_dataset(mbpp_problems, prompt_style="plain")
    assert plain[0]["prompt"].endswith("[BEGIN]\n")
    tok = AutoTokenizer.from_pretrained(tiny_chat_dir)
    chat = R.to_dataset(mbpp_problems, prompt_style="chat", tokenizer=tok)
    assert chat[0]["prompt"].endswith(f"```python\ndef {mbpp_problems[0].entry_point}(")
    with pytest.raises(ValueError, match="tokenizer"):
        R.to_dataset(mbpp_problems, prompt_style="chat")
    with pytest.raises(ValueError, match="prompt_style"):
        R.to_dataset(mbpp_problems, prompt_style="fancy")


def completions_for(problems):
    """(problem, prompt, completion, expected CodeRL reward): each problem's gold program as a
    conversational completion, a fenced one, one continuing a chat prefill ("def name("), and a
    wrong program (its tests then call an undefined function: a runtime error)."""
    rows = []
    for p in problems:
        gold, prefill = p.solutions[0], f"def {p.entry_point}("
        rows += [(p, None, [{"role": "assistant", "content": fenced(gold)}], 1.0),
                 (p, R.trl_prompt(p, "plain"), fenced(gold), 1.0),
                 (p, R.trl_prompt(p, "plain"), "def nothing():\n    return 0\n", -0.6)]
        if gold.startswith(prefill):
            rows.append((p, f"<|assistant|>```python\n{prefill}", gold[len(prefill):] + "```\nDone.", 1.0))
    return rows


def test_for_trl_scores_like_the_executor(mbpp_problems):
    reward = R.for_trl(mbpp_problems, exec_config=ExecConfig(workers=2, timeout=2.0))
    try:
        rows = completions_for(mbpp_problems)
        assert any(isinstance(r[1], str) and r[1].endswith("(") for r in rows)  # a prefill row is among them
        out = reward(prompts=[r[1] for r in rows], completions=[r[2] for r in rows], completion_ids=None,
                     problem_id=[r[0].id for r in rows], trainer_state=None)
        assert out == [r[3] for r in rows]
        # unknown ids are None; a missing id column is an error naming it
        assert reward(prompts=None, completions=["x"], problem_id=["nope"]) == [None]
        with pytest.raises(KeyError, match="problem_id"):
            reward(prompts=None, completions=["x"], task=["mbpp/11"])
        # picklable, and still scoring afterwards
        again = pickle.loads(pickle.dumps(reward))
        assert again(completions=[rows[0][2]], problem_id=[rows[0][0].id]) == [1.0]
        again.close()
        # other tables
        pf = R.for_trl(mbpp_problems, reward="pass_fail", exec_config=ExecConfig(workers=1))
        assert pf(completions=[rows[0][2], rows[2][2]], problem_id=[mbpp_problems[0].id] * 2) == [1.0, 0.0]
        pf.close()
    finally:
        reward.close()


def test_pass_ratio_counts_the_tests_passed(mbpp_problems):
    """pass_ratio: the share of the hidden tests passed. With early exit (the default) an assert
    problem stops at the first runtime error, so a crash on the first test gets nothing for the
    tests after it; without early exit every test counts."""
    p = mbpp_problems[0]
    assert p.entry_point == "remove_Occ" and len(p.tests["asserts"]) == 5
    wrong_once = "def remove_Occ(s, ch):\n    return s.replace(ch, '')\n"   # only the 4th assert fails
    crash_first = ("def remove_Occ(s, ch):\n    if s == 'hello':\n        raise ValueError(s)\n"
                   "    return s.replace(ch, '')\n")                        # raises on the 1st, fails the 4th
    for early_exit, expected in ((True, [0.8, 0.0]), (False, [0.8, 0.6])):
        reward = R.for_trl([p], reward="pass_ratio", exec_config=ExecConfig(workers=1, early_exit=early_exit))
        try:
            got = reward(completions=[fenced(wrong_once), fenced(crash_first)], problem_id=[p.id] * 2)
        finally:
            reward.close()
        assert got == pytest.approx(expected)


def test_for_trl_remote_matches_local(srv, mbpp_problems):
    rows = completions_for(mbpp_problems)
    kw = dict(prompts=[r[1] for r in rows], completions=[r[2] for r in rows], problem_id=[r[0].id for r in rows])
    remote = R.for_trl(mbpp_problems, url=srv.url, token=TOKEN)
    local = R.for_trl(mbpp_problems, exec_config=exec_config())
    try:
        assert remote(**kw) == local(**kw)
        assert pickle.loads(pickle.dumps(remote))(**kw) == local(**kw)
        # a wrong token is an error, not a silent None; an unreachable service leaves rows unscored
        with pytest.raises(ServiceError, match="401"):
            R.for_trl(mbpp_problems, url=srv.url, token="wrong")(**kw)
        gone = R.for_trl(mbpp_problems, url="http://127.0.0.1:9", token=TOKEN)
        assert gone(**kw) == [None] * len(rows)
    finally:
        local.close()


def test_trl_grpo_trainer_runs_with_coderl_reward(tiny_chat_dir, mbpp_problems, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_chat_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    reward = R.for_trl(mbpp_problems, exec_config=ExecConfig(workers=1, timeout=1.0))
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=16, max_steps=2, logging_steps=1, report_to=[], save_strategy="no",
                      use_cpu=True, seed=0, dataloader_num_workers=0)
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, processing_class=tok,
                              train_dataset=R.to_dataset(mbpp_problems, prompt_style="conversational"))
        trainer.train()
    finally:
        reward.close()
    steps = [h for h in trainer.state.log_history if "rewards/coderl_reward/mean" in h]
    assert len(steps) == 2
    table = Rewards()
    for h in steps:  # every completion scored (no None) with CodeRL's table
        assert table.compile_error <= h["rewards/coderl_reward/mean"] <= table.passed
        assert h["coderl/unscored"] == 0.0


# -- veRL -----------------------------------------------------------------------------------------
def test_verl_unscored_responses_never_outscore_a_failing_program(mbpp_problems):
    """An executor outage (here: nothing listens at the url) leaves responses unscored: they score
    the reward's runtime-error value by default (never above a program that ran and failed), or
    what ``unscored`` says."""
    p = mbpp_problems[0]
    gold, truth, down = fenced(p.solutions[0]), R.verl_ground_truth(p), "http://127.0.0.1:9"
    r = R.compute_score("mbpp", gold, truth, url=down, token=TOKEN)
    assert r == {"score": Rewards().runtime_error, "outcome": "unscored", "tests_passed": 0, "tests_total": 0}
    assert r["score"] < Rewards().failed
    assert R.compute_score("mbpp", gold, truth, url=down, token=TOKEN, reward="pass_fail")["score"] == 0.0
    assert R.compute_score("mbpp", gold, truth, url=down, token=TOKEN, unscored=-5.0)["score"] == -5.0
    batch = R.compute_score_batch(["mbpp"] * 2, [gold, gold], [truth, truth], url=down, token=TOKEN, reward="rltf")
    assert [b["score"] for b in batch] == [Rewards(partial_credit=True).runtime_error] * 2


def test_verl_ground_truth_formats(mbpp_problems):
    p = mbpp_problems[0]
    gold = fenced(p.solutions[0])
    truth = R.verl_ground_truth(p)
    passed = {"score": 1.0, "outcome": "passed", "tests_passed": p.num_tests, "tests_total": p.num_tests}
    assert R.compute_score("mbpp", gold, truth) == passed
    assert R.compute_score("mbpp", gold, json.loads(truth)) == passed
    assert R.compute_score("mbpp", gold, p.id, problems="mbpp") == passed
    assert R.compute_score("mbpp", gold, p.id, extra_info={"problems": "mbpp"}, reward="pass_fail")["score"] == 1.0
    sf = {"inputs": ["2\n", "5\n"], "outputs": ["4\n", "10\n"]}
    assert R.compute_score("apps", "```python\nprint(2 * int(input()))\n```", json.dumps(sf))["outcome"] == "passed"
    call = {"inputs": [[2], [5]], "outputs": [4, 10], "fn_name": "f"}
    assert R.compute_score("apps", "```python\ndef f(x):\n    return 2 * x\n```", call)["outcome"] == "passed"
    with pytest.raises(ValueError, match="not valid JSON"):
        R.compute_score("mbpp", gold, "{broken")
    with pytest.raises(ValueError, match="problem set"):
        R.compute_score("mbpp", gold, p.id)
    with pytest.raises(ProblemError, match="no such problem"):
        R.compute_score("mbpp", gold, "mbpp/none", problems="mbpp")
    with pytest.raises(ValueError, match="kind, tests"):
        R.compute_score("mbpp", gold, {"tests": {}})
    rows = R.to_verl_rows([p])
    assert rows[0]["reward_model"]["ground_truth"] == truth and rows[0]["extra_info"]["problem_id"] == p.id


def test_verl_scorer_agrees_with_native_on_humaneval(srv, native, humaneval):
    table = Rewards()
    programs = [(p, prog) for p in humaneval for prog in (p.solutions[0], p.prompt + "    return None\n")]
    expected = []
    for p, prog in programs:
        [r] = native.execute(p, [prog])
        expected.append({"score": table.reward(r), "outcome": r.outcome, "tests_passed": r.tests_passed,
                         "tests_total": r.tests_total})
    assert [e["outcome"] for e in expected[::2]] == ["passed"] * len(humaneval)
    sols = [fenced(prog) for _, prog in programs]
    truths = [R.verl_ground_truth(p) for p, _ in programs]
    remote = [R.compute_score("humaneval", s, t, url=srv.url, token=TOKEN) for s, t in zip(sols, truths)]
    assert remote == expected
    batch = R.compute_score_batch(["humaneval"] * len(sols), sols, truths, workers=2, timeout=1.0)
    assert batch == expected


def test_verl_scorer_agrees_with_native_on_the_hostile_corpus(srv, native):
    corpus = hostile_corpus(srv.engine.executor.guards)
    free_text = Prompt(text="", style="chat")
    sols = [fenced(prog if prog.endswith("\n") else prog + "\n") for _, _, prog, _ in corpus]
    extracted = [extract_program(s, free_text, p) for s, (_, p, _, _) in zip(sols, corpus)]
    truths = [R.verl_ground_truth(p) for _, p, _, _ in corpus]
    scores = R.compute_score_batch(["hostile"] * len(corpus), sols, truths, url=srv.url, token=TOKEN)
    table = Rewards()
    for (name, p, _, _), prog, got in zip(corpus, extracted, scores):
        [r] = native.execute(p, [prog])
        assert (got["score"], got["outcome"], got["tests_passed"]) == (table.reward(r), r.outcome, r.tests_passed), name
    # the service still serves
    assert native.execute(corpus[0][1], ["def f(x):\n    return 2 * x\n"])[0].outcome == "passed"


def test_verl_loads_the_module_by_file_path(humaneval):
    """Older veRL imports custom_reward_function.path as a file, under another module name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("custom_module_coderl", R.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    p = humaneval[0]
    try:
        score = module.compute_score("humaneval", fenced(p.solutions[0]), module.verl_ground_truth(p), workers=1)
    finally:
        module.close()
    assert score["outcome"] == "passed" and score["score"] == 1.0
