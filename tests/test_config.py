"""The config layer: values of the wrong type or out of range fail when a config is built (naming
the key), CLI options are generated from the dataclasses, and a run refuses to resume under
other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coderl.cli import app
from coderl.config import ConfigError
from coderl.evaluation.eval_config import EvalConfig
from coderl.generation.generation_config import GenerationConfig
from coderl.pipeline import load_config, parse_overrides, run_pipeline, select_stages
from coderl.problems.problems_config import ProblemsConfig
from coderl.rundir import RunDir, check_resume, write_meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls, kw, message", [
    (GenerationConfig, {"num_seqs": "two"}, "generation.num_seqs: expected int"),
    (GenerationConfig, {"greedy": "no"}, "generation.greedy: expected bool"),
    (GenerationConfig, {"temperature": "hot"}, "generation.temperature: expected float"),
    (GenerationConfig, {"threads": -3}, "generation.threads: must be >= 1"),
    (GenerationConfig, {"top_p": 1.5}, "generation.top_p: must be <= 1"),
    (GenerationConfig, {"prompt_style": "fancy"}, "generation.prompt_style: 'fancy' is not one of"),
    (GenerationConfig, {"device": "tpu"}, "generation.device: 'tpu' is not a device"),
    (GenerationConfig, {"num_seqs": 0, "greedy": False}, "generation.num_seqs"),
    (EvalConfig, {"ks": [0]}, "evaluation.ks: must be >= 1"),
    (EvalConfig, {"ks": [-1]}, "evaluation.ks: must be >= 1"),
    (EvalConfig, {"ks": "1,2"}, "evaluation.ks: expected list[int]"),
    (EvalConfig, {"n_at_k": ["5@1"]}, "n <= k"),
    (ProblemsConfig, {"start": -1}, "problems.start: must be >= 0"),
    (ProblemsConfig, {"difficulties": ["hard"]}, "problems.difficulties: 'hard' is not one of"),
])
def test_bad_values_fail_at_construction_naming_the_key(cls, kw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        cls(**kw)


def test_exec_config_values_are_validated_in_the_pipeline_config(tmp_path):
    from coderl.execution import ExecConfig

    for section, message in [({"timeout": "4s"}, "timeout"), ({"workers": "two"}, "workers"),
                             ({"isolation": "docker"}, "isolation"), ({"timeout": 0}, "timeout"),
                             ({"timeout": -1}, "timeout"), ({"limits": {"memory_mb": 1}}, "memory_mb")]:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"name": "x", "execution": section}))
        with pytest.raises(ConfigError, match=rf"c.yaml: execution: .*{message}"):
            load_config(path)
    assert ExecConfig().timeout == 4.0  # CodeRL's default lives in one place


def test_a_top_level_backend_sets_generation_and_execution(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "backend": "ray", "ray_actors": 3,
                                    "execution": {"ray_actors": 5}}))
    cfg = load_config(path)
    gen, ex = cfg.section("generation"), cfg.section("execution")
    assert (gen.backend, gen.ray_actors, ex.backend, ex.ray_actors) == ("ray", 3, "ray", 5)  # a section's own wins
    assert load_config(path, {"backend": "local"}).section("generation").backend == "local"
    path.write_text(yaml.safe_dump({"name": "x", "backend": "spark"}))
    with pytest.raises(ConfigError, match=r"c.yaml: generation: .*backend"):
        load_config(path)


def test_pipeline_config_errors_before_any_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"name: x\ngeneration: {model: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_text("name: x\nevaluation: {ks: '1,2'}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: evaluation: evaluation.ks: expected list\[int\]"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_overrides(["generation.num_seqs"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["generation.stop=[unclosed"])
    with pytest.raises(ConfigError, match="not a stage"):
        select_stages("train", None)
    with pytest.raises(ConfigError, match="comes after"):
        select_stages("evaluate", "generate")


def test_cli_options_come_from_the_dataclasses():
    runner = CliRunner()
    out = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "250"}).output
    for flag in ("--num-seqs", "--temperature", "--top-p", "--seed", "--heldout", "--skip-invalid", "--threads"):
        assert flag in out, flag
    assert "(default: 0.8)" in out  # the default shown is the dataclass's
    out = runner.invoke(app, ["execute", "--help"], env={"COLUMNS": "250"}).output
    assert "--timeout" in out and "(default: 4.0)" in out and "--memory-mb" in out
    out = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "250"}).output
    assert "--k" in out and "--compare" in out


@pytest.mark.parametrize("argv, message", [
    (["generate", "--problems", "mbpp", "--split", "test", "--end", "1", "--threads", "-3", "--out", "X"],
     "generation.threads: must be >= 1"),
    (["generate", "--problems", "mbpp", "--split", "test", "--end", "1", "--device", "cuda", "--out", "X"],
     "no CUDA device"),
    (["generate", "--problems", "mbpp", "--split", "test", "--end", "1", "--device", "npu", "--out", "X"],
     "is not a device"),
    (["generate", "--problems", "mbpp", "--split", "nope", "--out", "X"], "no problems with split 'nope'"),
    (["execute", "--problems", "mbpp", "--split", "test", "--samples", "S", "--out", "R", "--workers", "-1"],
     "workers"),
    (["evaluate", "--problems", "mbpp", "--split", "test", "--results", "R", "--out-dir", "O", "--k", "0"],
     "evaluation.ks: must be >= 1"),
    (["evaluate", "--problems", "mbpp", "--split", "test", "--results", "R", "--samples", "missing.jsonl",
      "--out-dir", "O"], "missing.jsonl: no such file"),
])
def test_cli_bad_values_give_one_line_errors(argv, message, tmp_path, monkeypatch):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "S").write_text('{"problem_id": "mbpp/11", "index": 0, "program": "x"}\n')
    (tmp_path / "R").write_text('{"problem_id": "mbpp/11", "index": 0, "outcome": "failed"}\n')
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert "--skip-invalid" not in r.output  # no hint about an option that does not help here


def test_cli_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "R").write_text('{"problem_id": "mbpp/11", "index": 0, "outcome": "failed"}\n')
    (tmp_path / "O").write_text("a file")
    r = CliRunner().invoke(app, ["evaluate", "--problems", "mbpp", "--split", "test", "--end", "1",
                                 "--results", str(tmp_path / "R"), "--out-dir", str(tmp_path / "O")])
    assert r.exit_code == 2 and "is a file" in r.output


def test_a_box_refuses_to_resume_under_other_settings(tmp_path):
    box = tmp_path / "samples.jsonl"
    assert check_resume(box, "generate", {"temperature": 0.8}) is False
    box.write_text('{"problem_id": "a", "index": 0, "program": ""}\n')
    write_meta(box, "generate", {"temperature": 0.8, "num_seqs": 5}, complete=True)
    assert check_resume(box, "generate", {"temperature": 0.8, "num_seqs": 5}) is True
    with pytest.raises(ConfigError) as e:
        check_resume(box, "generate", {"temperature": 0.5, "num_seqs": 10}, fresh_hint="use --fresh")
    msg = str(e.value)
    assert "temperature: 0.8 -> 0.5" in msg and "num_seqs: 5 -> 10" in msg and "use --fresh" in msg
    assert box.read_text().count("\n") == 1  # nothing written is lost


def test_run_dir_owns_the_names(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.samples.name == "samples.jsonl" and run.results.name == "results.jsonl"
    assert run.box("report_json").name == "report.json"
    with pytest.raises(KeyError):
        run.box("nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        RunDir(tmp_path / "f")


def _tiny_config(tmp_path, model_dir, **gen):
    cfg = {"name": "t", "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "test", "end": 2},
           "generation": {"model": str(model_dir), "num_seqs": 2, "max_new_tokens": 6,
                          "batch_size": 4, "progress": False, **gen},
           "execution": {"timeout": 2, "workers": 1},
           "evaluation": {"ks": [1, 2], "n_at_k": ["1@2"], "plots": False}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_refuses_a_changed_config_then_fresh_restarts(tiny_causal_dir, tmp_path):
    path = _tiny_config(tmp_path, tiny_causal_dir)
    run_pipeline(load_config(path), echo=lambda s: None)
    samples = tmp_path / "runs" / "t" / "samples.jsonl"
    before = samples.read_text()
    for override in ({"generation.num_seqs": 3}, {"generation.temperature": 0.5},
                     {"generation.model": str(tmp_path / "elsewhere")}):
        with pytest.raises(ConfigError, match="other settings"):
            run_pipeline(load_config(path, override), echo=lambda s: None)
        assert samples.read_text() == before
    lines = []
    run_pipeline(load_config(path, {"generation.num_seqs": 3}), echo=lines.append, fresh=True)
    recs = [json.loads(l) for l in samples.read_text().splitlines()]
    assert sorted((r["problem_id"], r["index"]) for r in recs) == [
        (p, i) for p in ("mbpp/11", "mbpp/12") for i in range(4)]
    assert sum(r["origin"] == "greedy" for r in recs) == 2  # one greedy per problem, not two


def test_pipeline_from_and_until(tiny_causal_dir, tmp_path):
    path = _tiny_config(tmp_path, tiny_causal_dir)
    lines = []
    run_pipeline(load_config(path), echo=lines.append, until="generate")
    run = tmp_path / "runs" / "t"
    assert (run / "samples.jsonl").exists() and not (run / "results.jsonl").exists()
    with pytest.raises(ConfigError, match="reads .*results.jsonl"):
        run_pipeline(load_config(path), echo=lines.append, start="evaluate")
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append, start="execute")
    assert lines[0] == "[2/3] execute" and (run / "report.json").exists()


def test_execute_and_evaluate_by_hand_use_the_recorded_selection(tiny_causal_dir, tmp_path):
    runner = CliRunner()
    samples, results = tmp_path / "s.jsonl", tmp_path / "r.jsonl"
    r = runner.invoke(app, ["generate", "--problems", "mbpp", "--split", "test", "--start", "2", "--end", "4",
                            "--model", str(tiny_causal_dir), "--num-seqs", "1", "--max-new-tokens", "4",
                            "--out", str(samples)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["execute", "--samples", str(samples), "--out", str(results), "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "--samples", str(samples), "--results", str(results),
                            "--out-dir", str(tmp_path / "rep"), "--k", "1", "--n-at-k", "1@1"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["overall"]["problems"] == 2 and report["missing"] == [] and not report["warnings"]
    # a different selection by hand: the results outside it are reported, not silently dropped
    r = runner.invoke(app, ["evaluate", "--problems", "mbpp", "--split", "test", "--end", "3",
                            "--samples", str(samples), "--results", str(results),
                            "--out-dir", str(tmp_path / "rep2"), "--k", "1", "--n-at-k", "1@1"])
    assert r.exit_code == 0 and "outside the selected" in r.output


def test_shipped_configs_validate():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_truncated_gguf_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CODERL_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 40)  # a header and nothing else
    r = CliRunner().invoke(app, ["generate", "--problems", "mbpp", "--split", "test", "--end", "1",
                                 "--model", str(bad), "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 2 and "cannot read it as a GGUF model" in r.output, r.output
    assert not any((tmp_path / "cache" / "models").glob("model-*/config.json"))  # no half checkpoint


@pytest.mark.parametrize("verb, flags", [
    ("train-critic", ["--num-classes", "--mode", "--epochs", "--val-fraction"]),
    ("critic-score", ["--checkpoint", "--batch-size"]),
    ("train-actor", ["--model", "--lr", "--epochs", "--run-dir"]),
    ("train-rl", ["--init", "--critic-weights", "--relative-return", "--ce-every", "--kl-coef", "--scores"]),
])
def test_learning_verbs_have_their_config_options(verb, flags):
    r = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    for flag in flags:
        assert flag in r.output, (verb, flag)


def test_learning_verbs_reject_bad_values():
    r = CliRunner().invoke(app, ["train-actor", "--problems", "mbpp", "--split", "train", "--run-dir", "x",
                                 "--lr", "0"])
    assert r.exit_code == 2 and "lr" in r.output and "Traceback" not in r.output


def test_train_rl_bad_samples_is_one_line_error(tmp_path):
    samples, results = tmp_path / "s.jsonl", tmp_path / "r.jsonl"
    samples.write_text('{"problem_id": "mbpp/601", "index": 0, "program": "def f(): pass", "raw": "x"}\n')
    results.write_text("")
    r = CliRunner().invoke(app, ["train-rl", "--problems", "mbpp", "--split", "train", "--samples", str(samples),
                                 "--results", str(results), "--run-dir", str(tmp_path / "run"),
                                 "--init", "default", "--no-critic-weights"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "error:" in r.output
