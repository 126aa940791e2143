"""The whole loop from a YAML config: tiny causal and T5 models through generate -> execute ->
evaluate, the CLI verbs, and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coderl.cli import app
from coderl.pipeline import ConfigError, load_config, run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, model_dir, name, **gen):
    cfg = {"name": name, "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "test", "end": 3},
           "generation": {"model": str(model_dir), "num_seqs": 2, "max_new_tokens": 8,
                          "batch_size": 4, "progress": False, **gen},
           "execution": {"timeout": 2},
           "evaluation": {"ks": [1, 2], "n_at_k": ["1@2"]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("which", ["tiny_chat_dir", "tiny_t5_dir"])
def test_tiny_models_through_the_whole_loop(which, tmp_path, request):
    model_dir = request.getfixturevalue(which)
    cfg = load_config(_config(tmp_path, model_dir, which))
    lines = []
    report = run_pipeline(cfg, echo=lines.append)
    run = tmp_path / "runs" / which
    for f in ("config.yaml", "samples.jsonl", "results.jsonl", "report.md", "report.json",
              "pass_at_k.png", "outcomes.png"):
        assert (run / f).exists(), f
    results = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()]
    assert len(results) == 9 and {r["problem_id"] for r in results} == {"mbpp/11", "mbpp/12", "mbpp/13"}
    outcomes = report["outcomes"]
    assert sum(outcomes["sampled"].values()) == 6 and sum(outcomes["greedy"].values()) == 3
    assert set(report["overall"]["pass@k"]) == {"1", "2"}
    assert any("greedy pass@1" in l for l in lines) and any("report:" in l for l in lines)
    # a rerun resumes: nothing generated or executed again
    lines = []
    again = run_pipeline(cfg, echo=lines.append)
    assert "[1/3] generate: complete under the same settings and inputs, skipped" in lines
    assert "[2/3] execute: complete under the same settings and inputs, skipped" in lines
    assert again["overall"] == report["overall"]
    assert len((run / "results.jsonl").read_text().splitlines()) == 9


def test_cli_generate_evaluate_and_pipeline(tiny_causal_dir, tmp_path):
    runner = CliRunner()
    samples = tmp_path / "s.jsonl"
    r = runner.invoke(app, ["generate", "--problems", "mbpp", "--split", "test", "--end", "2",
                            "--model", str(tiny_causal_dir), "--num-seqs", "1", "--max-new-tokens", "4",
                            "--out", str(samples)])
    assert r.exit_code == 0, r.output
    assert len(samples.read_text().splitlines()) == 4
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps({"problem_id": json.loads(l)["problem_id"],
                                           "index": json.loads(l)["index"], "outcome": "failed"}) + "\n"
                               for l in samples.read_text().splitlines()))
    r = runner.invoke(app, ["evaluate", "--problems", "mbpp", "--split", "test", "--end", "2",
                            "--results", str(results), "--samples", str(samples),
                            "--out-dir", str(tmp_path / "rep"), "--k", "1"])
    assert r.exit_code == 0, r.output
    assert "pass@1" in r.output and (tmp_path / "rep" / "report.md").exists()
    r = runner.invoke(app, ["generate", "--problems", "mbpp", "--model", str(tmp_path / "missing"),
                            "--out", str(tmp_path / "other.jsonl")])
    assert r.exit_code == 2 and "not a known name" in r.output
    cfg = _config(tmp_path, tiny_causal_dir, "cli")
    r = runner.invoke(app, ["pipeline", str(cfg), "--set", "problems.end=1", "--set", "generation.num_seqs=1",
                            "--set", "evaluation.ks=[1]", "--set", "evaluation.n_at_k=[]"])
    assert r.exit_code == 0, r.output
    assert "report:" in r.output and len((tmp_path / "runs" / "cli" / "results.jsonl").read_text().splitlines()) == 2


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngeneration:\n  num_seq: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: generation: unknown key\(s\) \['num_seq'\]"):
        load_config(bad)
    bad.write_text("generation: {}\n")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        load_config(bad)
    bad.write_text("name: x\nexecution:\n  timeout_s: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: execution: .*timeout_s"):
        load_config(bad)
    bad.write_text("name: x\nevaluation:\n  n_at_k: ['5@1']\n")
    with pytest.raises(ConfigError, match="n <= k"):
        load_config(bad)


@pytest.mark.parametrize("name", ["mbpp_smollm2_eval_cpu", "mbpp_smollm2_baseline_cpu", "mbpp_smollm2_coderl_loop_cpu",
                                  "mbpp_smollm2_coderl_cpu", "mbpp_smollm2_critic_cpu", "mbpp_smollm2_sft_cpu"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.problems.source == "mbpp"
    # the bundled model, or (CodeRL: the SFT model samples) this run's own SFT checkpoint
    assert cfg.generation.model in ("default", "sft")  # sft: this run's own SFT model, whatever its name
    assert cfg.generation.model == "default" or cfg.sft is not None


def _critic_sections(model_dir) -> dict:
    """execution, evaluation, critic and critic_score sections of a tiny pipeline config."""
    return {"execution": {"timeout": 2, "workers": 1},
            "evaluation": {"ks": [1], "n_at_k": [], "plots": False},
            "critic": {"model": str(model_dir), "mode": "head", "epochs": 1, "batch_size": 4,
                       "val_fraction": 0.5, "gold_in_validation": True, "bootstrap": 20,
                       "progress": False, "threads": 1},
            "critic_score": {"checkpoint": "best", "progress": False, "threads": 1}}


def test_critic_stages_in_the_pipeline(tiny_chat_dir, tmp_path):
    cfg = {"name": "crit", "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "train", "end": 4},
           "generation": {"model": str(tiny_chat_dir), "num_seqs": 2, "max_new_tokens": 6,
                          "batch_size": 8, "progress": False},
           **_critic_sections(tiny_chat_dir)}
    path = tmp_path / "crit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_pipeline(load_config(path), echo=lines.append)
    assert "[4/5] train-critic" in lines and "[5/5] critic-score" in lines
    run = tmp_path / "runs" / "crit"
    metrics = json.loads((run / "critic" / "metrics.json").read_text())
    assert metrics["complete"] and "auroc" in json.dumps(metrics)
    from coderl.critic import read_scores

    scores = read_scores(run / "critic_scores.npz")
    assert len(scores) == 4 * 3  # every sample (2 sampled + 1 greedy per problem)
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append)
    assert "[4/5] train-critic: complete under the same settings and inputs, skipped" in lines
    assert "[5/5] critic-score: complete under the same settings and inputs, skipped" in lines


def test_the_whole_coderl_loop_from_one_config(tiny_chat_dir, tmp_path):
    """sft -> generate (by the SFT model) -> execute -> evaluate -> train-critic -> critic-score ->
    train-rl, from one YAML, on a tiny model; a rerun skips every stage."""
    name = "loop"
    run = tmp_path / "runs" / name
    quiet = {"progress": False, "val_source": None, "save_every": 0, "threads": 1}
    cfg = {"name": name, "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "train", "end": 4},
           "sft": {"model": str(tiny_chat_dir), "epochs": 1, "batch_size": 2, "grad_accum": 1, **quiet},
           "generation": {"model": str(run / "sft"), "num_seqs": 2, "max_new_tokens": 6,
                          "batch_size": 8, "progress": False},
           **_critic_sections(tiny_chat_dir),
           "rl": {"init": "sft", "batch_size": 2, "grad_accum": 1, "ce_every": 1, "epochs": 1,
                  "skip_zero_return": False, **quiet},
           "compare": {"end": 3, "max_new_tokens": 6, "resamples": 20, "progress": False, "threads": 1}}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_pipeline(load_config(path), echo=lines.append)
    names = ["train-actor", "generate", "execute", "evaluate", "train-critic", "critic-score", "train-rl",
             "compare-models"]
    assert [l for l in lines if l.startswith("[")] == [f"[{i}/8] {n}" for i, n in enumerate(names, 1)]
    rl = json.loads((run / "rl" / "metrics.json").read_text())
    assert rl["complete"] and rl["summary"]["data"]["rl"]["q_hat"] != "ones"
    assert (run / "rl" / "adapter_config.json").exists() or (run / "rl" / "config.json").exists()
    # base, SFT and RL side by side on held-out problems, each with its own programs
    cmp = json.loads((run / "compare.json").read_text())
    assert list(cmp["models"]) == ["base", "sft", "rl"] and cmp["problems"]["count"] == 3
    assert cmp["models"]["base"] == str(tiny_chat_dir) and cmp["models"]["rl"] == str(run / "rl")
    assert [r["metric"] for r in cmp["rows"]] == ["greedy_pass@1", "hack_rate"]
    for label in ("base", "sft", "rl"):
        n = len((run / "compare" / label / "results.jsonl").read_text().splitlines())
        assert n == 3 and sum(cmp["outcomes"][label].values()) == 3
    assert "| greedy_pass@1 |" in (run / "compare.md").read_text()
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append)
    skipped = [l for l in lines if l.endswith("skipped")]
    assert len(skipped) == 7, lines  # every stage but evaluate (always rewritten, cheap)
    # the critic retrained alone: its scores and the RL model trained on them are stale, redone
    run_pipeline(load_config(path), echo=lines.append, start="train-critic", until="train-critic", fresh=True)
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append)
    redone = [l for l in lines if l.startswith("[") and not l.endswith("skipped")]
    assert redone == ["[4/8] evaluate", "[6/8] critic-score", "[7/8] train-rl", "[8/8] compare-models"], lines
    assert any("critic was rewritten" in l for l in lines)
    # a retrained RL model makes the comparison stale: it runs again, regenerating rl's programs only
    (run / "rl" / "metrics.json").touch()
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append, start="compare-models")
    assert "[8/8] compare-models" in lines
    changed = [l.split(":")[0].strip() for l in lines if "changed since" in l]
    assert changed == ["rl"], lines
    # other comparison settings: the programs already there are refused, not mixed; --fresh redoes them
    cfg["compare"]["max_new_tokens"] = 5
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        run_pipeline(load_config(path), echo=lines.append, start="compare-models")
    run_pipeline(load_config(path), echo=lines.append, start="compare-models", fresh=True)
    assert json.loads((run / "compare.json").read_text())["complete"]


def test_compare_models_bad_settings_name_the_key(tmp_path):
    from coderl.evaluation.models_config import ModelsEvalConfig
    from coderl.evaluation.models_stage import resolve_models

    with pytest.raises(ConfigError, match=r"compare\.models: needs at least one model"):
        ModelsEvalConfig(models=[])
    with pytest.raises(ConfigError, match=r"compare\.models: .* names a model twice"):
        ModelsEvalConfig(models=["base", "base"])
    with pytest.raises(ConfigError, match=r"compare\.end"):
        ModelsEvalConfig(end=0)
    (tmp_path / "sft").mkdir()
    got = resolve_models(tmp_path, ModelsEvalConfig(models=["base", "sft", "other/dir"]), "default")
    assert got == [("base", "default"), ("sft", str(tmp_path / "sft")), ("dir", "other/dir")]
    with pytest.raises(ConfigError, match=r"'rl' means .*rl, which does not exist"):
        resolve_models(tmp_path, ModelsEvalConfig(), "default")


def test_compare_models_verb(tiny_chat_dir, tmp_path):
    """The verb by hand: two models side by side; a missing run model is a one-line error."""
    run = tmp_path / "run"
    common = ["--end", "2", "--max-new-tokens", "4", "--resamples", "20", "--threads", "1",
              "--workers", "1", "--timeout", "2"]
    res = CliRunner().invoke(app, ["compare-models", "--run-dir", str(run), "--base-model", str(tiny_chat_dir),
                                   "--models", "base", "--models", str(tiny_chat_dir), *common])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "compare.json").read_text())
    assert list(out["models"]) == ["base", tiny_chat_dir.name]
    # one model, twice: the same programs, so a difference of exactly 0
    assert out["rows"][0]["differences"][tiny_chat_dir.name]["diff"] == 0
    res = CliRunner().invoke(app, ["compare-models", "--run-dir", str(tmp_path / "run2"), "--models", "rl", *common])
    assert res.exit_code == 2 and "which does not exist" in res.output and "Traceback" not in res.output


def test_critic_sampling_stages_in_the_pipeline(tiny_chat_dir, tmp_path):
    """generate -> execute -> train-critic (binary) -> train-repair -> critic-sample from one YAML;
    a rerun skips; a retrained repair model makes critic-sample stale."""
    run = tmp_path / "runs" / "cs"
    cfg = {"name": "cs", "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "train", "end": 4},
           "generation": {"model": str(tiny_chat_dir), "num_seqs": 2, "max_new_tokens": 6,
                          "batch_size": 8, "progress": False},
           **_critic_sections(tiny_chat_dir),
           "repair": {"model": str(tiny_chat_dir), "epochs": 1, "batch_size": 2, "grad_accum": 1,
                      "progress": False, "save_every": 0, "threads": 1},
           "critic_sample": {"model": str(tiny_chat_dir), "critic": "best", "repair": "run", "refine_failed": True,
                             "budget": 3, "first": 2, "rounds": 1, "submit": 2, "end": 2,
                             "max_new_tokens": 6, "batch_size": 8, "progress": False, "threads": 1}}
    cfg["critic"]["num_classes"] = 2
    del cfg["critic_score"]
    path = tmp_path / "cs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_pipeline(load_config(path), echo=lines.append)
    names = ["generate", "execute", "evaluate", "train-critic", "train-repair", "critic-sample"]
    assert [l for l in lines if l.startswith("[")] == [f"[{i}/6] {n}" for i, n in enumerate(names, 1)]
    rep = json.loads((run / "critic_sampling" / "report.json").read_text())
    assert rep["summary"]["programs"] == 6 and rep["models"]["repair"] == str(run / "repair")
    assert rep["models"]["critic_classes"] == 2
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append)
    assert "[6/6] critic-sample: complete under the same settings and inputs, skipped" in lines
    run_pipeline(load_config(path), echo=lines.append, start="train-repair", until="train-repair", fresh=True)
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append, start="critic-sample")
    assert any("repair was rewritten" in l for l in lines), lines
    # other settings are refused naming the key
    cfg["critic_sample"]["budget"] = 4
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="budget"):
        run_pipeline(load_config(path), echo=lines.append, start="critic-sample")
