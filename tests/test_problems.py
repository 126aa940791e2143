"""Problem loaders on the shipped data and on small malformed fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coderl.cli import app
from coderl.paths import data_dir
from coderl.problems import Problem, ProblemError, load_problems
from coderl.problems.examples import extract_examples

APPS_SAMPLE = data_dir() / "apps-sample"


# -- shipped data --------------------------------------------------------------------------------
def test_mbpp_counts_and_splits():
    problems = load_problems("mbpp")
    assert len(problems) == 974
    by_split = {s: sum(p.split == s for p in problems) for s in ("test", "train", "validation", "prompt")}
    assert by_split == {"test": 500, "train": 374, "validation": 90, "prompt": 10}
    test = load_problems("mbpp", split="test")
    assert [p.meta["task_id"] for p in test] == list(range(11, 511))
    for p in problems:
        assert p.kind == "assert" and p.entry_point
        assert p.example_tests["asserts"] == p.tests["asserts"][: len(p.example_tests["asserts"])]
        assert any(f"{p.entry_point}(" in a for a in p.tests["asserts"]), p.id


def test_mbpp_setup_code_and_challenge_tests():
    problems = {p.id: p for p in load_problems("mbpp")}
    with_setup = [p for p in problems.values() if p.tests["setup"]]
    assert with_setup, "MBPP has tasks with test_setup_code"
    assert all(p.example_tests["setup"] == p.tests["setup"] for p in with_setup)
    with_challenge = [p for p in problems.values() if p.meta["num_challenge_tests"]]
    assert with_challenge
    p = with_challenge[0]
    lean = {q.id: q for q in load_problems("mbpp", include_challenge=False)}[p.id]
    assert len(p.tests["asserts"]) == len(lean.tests["asserts"]) + p.meta["num_challenge_tests"]


def test_mbpp_reference_code_runs_against_its_own_example_tests_for_a_few_tasks():
    # trusted reference programs, run in-process only to check the loader's wiring of setup/asserts
    for p in load_problems("mbpp", split="test")[:20]:
        env: dict = {}
        exec(p.solutions[0], env)
        exec(p.tests["setup"], env)
        for a in p.example_tests["asserts"]:
            exec(a, env)


def test_humaneval_from_package():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    assert all(p.kind == "assert" and p.entry_point and p.tests["check"] for p in problems)
    assert problems[0].id == "HumanEval/0" and problems[0].prompt.startswith("from typing import List")
    with_examples = [p for p in problems if p.example_tests]
    assert len(with_examples) >= 100
    # the docstring examples must agree with the canonical solutions
    wrong = []
    for p in with_examples:
        env: dict = {}
        exec(p.solutions[0], env)
        for a in p.example_tests["asserts"]:
            try:
                exec(a, env)
            except AssertionError:
                wrong.append((p.id, a))
    # two docstrings hold examples that contradict the reference (typos in the dataset):
    # HumanEval/47 median(...) == 15.0 (really 8.0) and HumanEval/148 == ("Venus") (a str, not a tuple)
    assert sorted(pid for pid, _ in wrong) == ["HumanEval/148", "HumanEval/47"], wrong


def test_apps_sample_folder():
    problems = load_problems("apps", path=APPS_SAMPLE, split="train")
    assert [p.id for p in problems] == ["apps/train/0001", "apps/train/0111", "apps/train/2287",
                                        "apps/train/2404", "apps/train/4184"]
    kinds = [p.kind for p in problems]
    assert kinds.count("stdio") == 3 and kinds.count("call") == 2
    by_id = {p.id: p for p in problems}
    assert by_id["apps/train/2404"].entry_point == "findKthPositive"
    assert by_id["apps/train/2404"].starter_code.startswith("class Solution")
    assert by_id["apps/train/0001"].difficulty == "interview"
    # the example shown in each statement is the first hidden test in this sample
    for pid in ("apps/train/0001", "apps/train/0111", "apps/train/2287", "apps/train/2404"):
        p = by_id[pid]
        assert p.example_tests["inputs"][0] == p.tests["inputs"][0]
        assert p.example_tests["outputs"][0] == p.tests["outputs"][0]
    assert by_id["apps/train/2404"].example_tests["inputs"][1] == [[1, 2, 3, 4], 2]
    assert by_id["apps/train/4184"].example_tests == {}  # its statement shows no example


def test_apps_selection_by_difficulty_and_range():
    intro = load_problems("apps", path=APPS_SAMPLE, difficulties=["introductory"])
    assert [p.id for p in intro] == ["apps/train/2404", "apps/train/4184"]
    assert [p.id for p in load_problems("apps", path=APPS_SAMPLE, start=1, end=3)] == [
        "apps/train/0111", "apps/train/2287"]
    with pytest.raises(ValueError, match="unknown difficulty"):
        load_problems("apps", path=APPS_SAMPLE, difficulties=["easy"])


def _hf_rows(tmp_path: Path) -> Path:
    """The APPS sample rewritten in the Hugging Face layout (JSON strings inside rows)."""
    rows = []
    for d in sorted((APPS_SAMPLE / "train").iterdir()):
        meta = json.loads((d / "metadata.json").read_text())
        starter = d / "starter_code.py"
        rows.append({"problem_id": int(d.name), "question": (d / "question.txt").read_text(),
                     "solutions": (d / "solutions.json").read_text(),
                     "input_output": (d / "input_output.json").read_text(),
                     "difficulty": meta["difficulty"], "url": meta["url"],
                     "starter_code": starter.read_text() if starter.exists() else ""})
    path = tmp_path / "apps_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_apps_hf_jsonl_layout_matches_folder_layout(tmp_path):
    path = _hf_rows(tmp_path)
    hf = load_problems("apps", path=path, split="train")
    sniffed = load_problems(str(path), split="train")
    folder = load_problems("apps", path=APPS_SAMPLE, split="train")
    assert [p.to_dict() for p in hf] == [p.to_dict() for p in folder] == [p.to_dict() for p in sniffed]


def test_coderl_jsonl_roundtrip(tmp_path):
    problems = load_problems("apps", path=APPS_SAMPLE)[:2] + load_problems("mbpp", split="prompt")[:2]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(p.to_json() + "\n" for p in problems))
    again = load_problems(str(path))
    assert [p.to_dict() for p in again] == [p.to_dict() for p in problems]


# -- example extraction: each layout ---------------------------------------------------------------
def test_examples_codeforces_multiple_pairs():
    q = ("Statement.\n\n-----Examples-----\nInput\n3\n1 2 3\n\nOutput\n6\n\nInput\n1\n5\n\nOutput\n5\n\n"
         "\n-----Note-----\n\nIn the first example ...")
    assert extract_examples(q) == {"inputs": ["3\n1 2 3\n", "1\n5\n"], "outputs": ["6\n", "5\n"]}


def test_examples_atcoder_numbered_samples_with_prose_after():
    q = ("-----Sample Input 1-----\n2\n1 2\n\n-----Sample Output 1-----\n3\n\nThe sum is 3.\n\n"
         "-----Sample Input 2-----\n1\n7\n\n-----Sample Output 2-----\n7\n")
    assert extract_examples(q) == {"inputs": ["2\n1 2\n", "1\n7\n"], "outputs": ["3\n", "7\n"]}


def test_examples_codechef_colon_headers_and_example_with_colon_markers():
    q = "-----Sample Input:-----\n1\n4\n-----Sample Output:-----\n16\n-----EXPLANATION:-----\nsquare"
    assert extract_examples(q) == {"inputs": ["1\n4\n"], "outputs": ["16\n"]}
    q2 = "-----Example-----\nInput:\n2\n\nOutput:\n4\n"
    assert extract_examples(q2) == {"inputs": ["2\n"], "outputs": ["4\n"]}


def test_examples_leetcode_call_based():
    q = ("Example 1:\nInput: nums = [1,2], target = 3\nOutput: [0,1]\n\nExample 2:\n"
         "Input: s = \"ab\", flag = true\nOutput: false\nExplanation: no.\n")
    ex = extract_examples(q, "twoSum")
    assert ex == {"fn_name": "twoSum", "inputs": [[[1, 2], 3], ["ab", True]], "outputs": [[0, 1], False]}


def test_examples_codewars_call_based():
    q = "```python\nsolution(10) == 23\nsolution(3) => 0\nsolution('x', [1]) # returns 'x1'\n```"
    ex = extract_examples(q, "solution")
    assert ex["inputs"] == [[10], [3], ["x", [1]]] and ex["outputs"] == [23, 0, "x1"]


def test_example_input_output_json_wins(tmp_path):
    root = _copy_sample(tmp_path, "0001")
    (root / "train" / "0001" / "example_input_output.json").write_text(
        json.dumps({"inputs": ["1\n1 1 1\n"], "outputs": ["1\n"]}))
    (p,) = load_problems("apps", path=root)
    assert p.example_tests == {"inputs": ["1\n1 1 1\n"], "outputs": ["1\n"]}


def test_example_coverage_on_sample():
    problems = load_problems("apps", path=APPS_SAMPLE)
    assert sum(p.num_example_tests for p in problems) == 5  # 1 + 1 + 1 + 2 + 0


# -- bad input: one fixture per case, the error names the file and the problem -------------------------
def _copy_sample(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "apps"
    for n in names:
        shutil.copytree(APPS_SAMPLE / "train" / n, root / "train" / n)
    return root


def _expect_error(root: Path, file: str, pid: str, what: str):
    with pytest.raises(ProblemError) as info:
        load_problems("apps", path=root)
    msg = str(info.value)
    assert file in msg and pid in msg and what in msg, msg
    # --skip-invalid keeps the good problem and lists the bad one
    ok = load_problems("apps", path=root, skip_invalid=True)
    assert [p.id for p in ok] == ["apps/train/0111"]
    assert len(ok.skipped) == 1 and pid in str(ok.skipped[0])


def test_bad_malformed_json(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/input_output.json").write_text('{"inputs": ["1"], "outputs": [')
    _expect_error(root, "0001/input_output.json", "apps/train/0001", "malformed JSON")


def test_bad_missing_question(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/question.txt").unlink()
    _expect_error(root, "0001/question.txt", "apps/train/0001", "missing question.txt")


def test_bad_inputs_outputs_lengths(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/input_output.json").write_text(json.dumps({"inputs": ["1\n", "2\n"], "outputs": ["1\n"]}))
    _expect_error(root, "0001/input_output.json", "apps/train/0001", "2 inputs but 1 outputs")


def test_bad_non_utf8_question(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/question.txt").write_bytes(b"Caf\xe9 au lait\xff\n")
    _expect_error(root, "0001/question.txt", "apps/train/0001", "not valid UTF-8")


def test_bad_unknown_difficulty(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/metadata.json").write_text(json.dumps({"difficulty": "legendary", "url": ""}))
    _expect_error(root, "0001/metadata.json", "apps/train/0001", "unknown difficulty 'legendary'")


def test_bad_empty_dataset(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ProblemError, match=r"empty.*empty dataset"):
        load_problems("apps", path=tmp_path / "empty")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ProblemError, match=r"e\.jsonl.*empty dataset"):
        load_problems(str(tmp_path / "e.jsonl"))


def test_bad_jsonl_lines_name_file_and_line(tmp_path):
    good = load_problems("mbpp", split="prompt")[0]
    path = tmp_path / "mine.jsonl"
    bad_kind = {**good.to_dict(), "id": "p2", "kind": "weird"}
    path.write_text(good.to_json() + "\n{not json\n" + json.dumps(bad_kind) + "\n")
    with pytest.raises(ProblemError, match=r"mine\.jsonl:2 \(problem line 2\): malformed JSON"):
        load_problems(str(path))
    ok = load_problems(str(path), skip_invalid=True)
    assert [p.id for p in ok] == [good.id]
    assert "mine.jsonl:3 (problem p2): unknown kind 'weird'" in str(ok.skipped[1])


def test_bad_hf_row_lengths(tmp_path):
    path = _hf_rows(tmp_path)
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    rows[1]["input_output"] = json.dumps({"inputs": ["1\n"], "outputs": []})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ProblemError, match=r"apps_train\.jsonl:2 \(problem apps/train/0111\): tests: 1 inputs but 0 outputs"):
        load_problems("apps", path=path, split="train")


def test_schema_validation_messages():
    with pytest.raises(ProblemError, match="unknown field"):
        Problem.from_dict({"id": "x", "source": "jsonl", "question": "q", "kind": "stdio",
                           "tests": {"inputs": ["1"], "outputs": ["1"]}, "bogus": 1}, path="f.jsonl")
    with pytest.raises(ProblemError, match=r"f\.jsonl \(problem x\): call-based problem without fn_name"):
        Problem.from_dict({"id": "x", "source": "jsonl", "question": "q", "kind": "call",
                           "tests": {"inputs": [[1]], "outputs": [1]}}, path="f.jsonl")


# -- CLI -----------------------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_stats_json_counts():
    res = runner.invoke(app, ["problems", "stats", "--json"])
    assert res.exit_code == 0, res.output
    rows = {(r["source"], r["split"]): r for r in json.loads(res.output)}
    assert rows[("mbpp", "all")]["problems"] == 974
    assert {s: rows[("mbpp", s)]["problems"] for s in ("test", "train", "validation", "prompt")} == {
        "test": 500, "train": 374, "validation": 90, "prompt": 10}
    assert rows[("humaneval", "test")]["problems"] == 164
    apps = rows[("apps", "train")]
    assert apps["problems"] == 5 and apps["kinds"] == {"stdio": 3, "call": 2}
    assert apps["example_tests"] == 5


def test_cli_table_and_show():
    res = runner.invoke(app, ["problems", "stats"])
    assert res.exit_code == 0 and "example tests/problem" in res.output
    res = runner.invoke(app, ["problems", "show", "apps", "apps/train/2404"])
    assert res.exit_code == 0 and "findKthPositive" in res.output
    res = runner.invoke(app, ["problems", "list", "mbpp", "--split", "prompt"])
    assert res.exit_code == 0 and "mbpp/1" in res.output


def test_cli_bad_input_is_one_clear_line(tmp_path):
    root = _copy_sample(tmp_path, "0001", "0111")
    (root / "train/0001/question.txt").unlink()
    res = runner.invoke(app, ["problems", "list", "apps", "--path", str(root)])
    assert res.exit_code == 2
    assert "question.txt" in res.output and "apps/train/0001" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["problems", "list", "apps", "--path", str(root), "--skip-invalid"])
    assert res.exit_code == 0 and "skipped" in res.output and "apps/train/0111" in res.output


# -- the held-out MBPP variant and the selection checks ------------------------------------------
def test_mbpp_heldout_shows_one_assert_and_hides_all():
    from coderl.models.prompts import chat_message, plain_prompt

    std = {p.id: p for p in load_problems("mbpp", split="test")}
    held = load_problems("mbpp-heldout", split="test")
    assert len(held) == 500 and [p.id for p in held] == list(std)
    assert [p.id for p in load_problems("mbpp", split="test", heldout=True)] == list(std)
    for p in held:
        s = std[p.id]
        assert p.example_tests["asserts"] == s.tests["asserts"][:1]
        assert p.tests == s.tests  # hidden: all of test_list + challenge_test_list
        for text in (plain_prompt(p).text, chat_message(p)[0]):
            assert text.count("assert ") == 1 and p.example_tests["asserts"][0] in text
            assert all(a not in text for a in s.tests["asserts"][1:] if a != p.example_tests["asserts"][0])
    with pytest.raises(ValueError, match="MBPP only"):
        load_problems("humaneval", heldout=True)


def test_duplicate_problem_ids_are_rejected(tmp_path):
    row = {"id": "x/1", "source": "jsonl", "question": "q", "kind": "assert",
           "tests": {"setup": "", "asserts": ["assert f() == 1"], "check": None}}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ProblemError, match=r"p.jsonl \(problem x/1\): duplicate problem id"):
        load_problems(str(path))


def test_split_is_applied_to_files_and_unknown_splits_fail(tmp_path):
    rows = [{"id": f"x/{i}", "source": "jsonl", "question": "q", "kind": "assert", "split": s,
             "tests": {"setup": "", "asserts": ["assert f() == 1"], "check": None}}
            for i, s in enumerate(["train", "test", "test"])]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.id for p in load_problems(str(path), split="test")] == ["x/1", "x/2"]
    with pytest.raises(ProblemError, match=r"no problems with split 'valid'.*\['test', 'train'\]"):
        load_problems(str(path), split="valid")
    with pytest.raises(ProblemError, match="no problems with split 'tset'"):
        load_problems("mbpp", split="tset")
    with pytest.raises(ProblemError, match=r"no split 'test' here.*\['train'\]"):
        load_problems("apps", split="test")


@pytest.mark.parametrize("tests, message", [
    ({"setup": 5, "asserts": ["assert True"], "check": None}, "'setup' must be a string"),
    ({"setup": "", "asserts": ["assert True"], "check": 7}, "'check' must be a string"),
    ({"setup": "", "asserts": ["assert True"], "chek": "x"}, "unknown key"),
])
def test_wrongly_typed_test_fields_are_the_file_s_fault(tmp_path, tests, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x/1", "source": "jsonl", "question": "q", "kind": "assert",
                                "tests": tests}) + "\n")
    with pytest.raises(ProblemError, match=rf"p.jsonl(:1)? \(problem x/1\): tests: .*{message}"):
        load_problems(str(path))
