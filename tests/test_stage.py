"""The stage contract: one rule for every box of the stage table (complete only under the same
settings and inputs; changed settings redo or refuse, naming the key; stale inputs redo), and the
classes of silent wrong results it closes."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import yaml
from typer.testing import CliRunner

from coderl.cli import app
from coderl.config import ConfigError
from coderl.pipeline import STAGES, load_config, run_pipeline
from coderl.rundir import RunDir, write_meta
from coderl.stage import StageContext, box_state, fingerprint_of, input_stamps


def _fields(cfg, prefix=""):
    """(dotted name, owner, field) for every field of a config, nested dataclasses included."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _fields(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, cfg, f


def _candidates(f, value, tp):
    choices = (f.metadata or {}).get("choices")
    if choices and isinstance(value, list):
        return [value + [c] for c in choices if c not in value]
    if choices:
        return [c for c in choices if c != value]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    args = [tp]
    base = typing.get_origin(tp) or tp
    if value is None:
        value = {int: 0, float: 0.0, str: "", bool: False, list: []}.get(base)
    if base is bool:
        return [not value]
    if base is int:
        return [value + 1, value + 2, value - 1, 1, 2]
    if base is float:
        return [value * 2 if value else 0.5, value + 0.05, value / 2, 0.5, 1.0]
    if base is str:
        return [value + "x", "1@5", "mbpp", "none"]
    if base is list:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return [list(value) + [v] for v in ([3] if inner is int else ["q_proj", "1@5", "base", "humaneval", "greedy", "x"])] + [[]]
    return []


COMPANIONS = {"best_metric": {"val_pass_every": 1}}  # settings another value needs beside it


def _changed(cfg, dotted):
    """``cfg`` with the setting ``dotted`` changed to another valid value (or None)."""
    path = dotted.split(".")
    owner = cfg
    for p in path[:-1]:
        owner = getattr(owner, p)
    f = next(x for x in dataclasses.fields(owner) if x.name == path[-1])
    tp = typing.get_type_hints(type(owner))[f.name]
    for value in _candidates(f, getattr(owner, f.name), tp):
        try:
            extra = {k: v for k, v in COMPANIONS.get(f.name, {}).items() if hasattr(owner, k)}
            if f.name == "patience" and getattr(owner, "best_metric", None) == "last":
                extra["best_metric"] = "loss"   # early stopping needs a score (train-online publishes the last)
            new_owner = dataclasses.replace(owner, **{f.name: value, **extra})
        except (ConfigError, ValueError, TypeError):
            continue
        if len(path) == 1:
            return new_owner
        return dataclasses.replace(cfg, **{path[0]: new_owner})
    return None


def _cases():
    for st in STAGES:
        cfg = st.config_class()()
        skip = set(st.not_fingerprinted()) - set(st.grows)
        for dotted, _, f in _fields(cfg):
            if dotted.split(".")[-1] in skip or (f.metadata or {}).get("cli") is False and f.name == "progress":
                continue
            yield pytest.param(st, dotted, id=f"{st.name}:{dotted}")


@pytest.mark.parametrize("stage,setting", list(_cases()))
def test_every_fingerprinted_setting_redoes_or_refuses(stage, setting, tmp_path, mbpp_problems):
    """For every stage of the table and every setting that decides its output: a complete box
    written under the default value is never 'complete' under another value."""
    cfg = stage.config_class()()
    other = _changed(cfg, setting)
    assert other is not None, f"no other valid value found for {stage.name}.{setting}: extend _candidates"
    run = RunDir(tmp_path / "run").mkdir()
    ctx = StageContext()
    problems = list(mbpp_problems[:2])
    fp = fingerprint_of(stage, problems, run, cfg, ctx)
    for b in stage.writes:
        box = run.box(b)
        box.mkdir(parents=True) if b in RunDir.DIRS else box.write_text("x\n")
        if b in RunDir.DIRS:
            (box / "f").write_text("x")
        inputs = input_stamps(stage, problems, run, cfg, ctx)
        write_meta(box, stage.name, fp, complete=True, extra={"inputs": inputs, "stamp": "s"})
    assert box_state(stage, run, fp, input_stamps(stage, problems, run, cfg, ctx))[0] == "complete"
    fp2 = fingerprint_of(stage, problems, run, other, ctx)
    state, reasons = box_state(stage, run, fp2, input_stamps(stage, problems, run, other, ctx))
    name = setting.split(".")[-1]
    if name in stage.grows:
        assert state == "resume"
    else:
        assert state == "changed" and any(name in r for r in reasons), (state, reasons)


def test_every_stage_module_follows_the_contract():
    for st in STAGES:
        impl = st.impl()
        assert callable(impl.run), st.name
        assert dataclasses.is_dataclass(st.config_class()), st.name
        for b in st.reads + st.writes:
            RunDir("r").box(b)  # every box is named by RunDir


def _tiny(tmp_path, model_dir, name="tiny", **extra):
    cfg = {"name": name, "runs_dir": str(tmp_path / "runs"),
           "problems": {"source": "mbpp", "split": "test", "end": 2},
           "generation": {"model": str(model_dir), "num_seqs": 1, "max_new_tokens": 4, "batch_size": 4,
                          "progress": False},
           "execution": {"timeout": 2, "workers": 1},
           "evaluation": {"ks": [1], "n_at_k": [], "plots": False}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def test_a_box_rewritten_by_hand_makes_its_readers_stale(tiny_chat_dir, tmp_path):
    """Samples regenerated outside the pipeline (the verb, another seed): the pipeline's execute
    is not skipped as complete; the results follow the new samples."""
    path, cfg = _tiny(tmp_path, tiny_chat_dir)
    lines = []
    run_pipeline(load_config(path), echo=lines.append)
    run = tmp_path / "runs" / "tiny"
    res = CliRunner().invoke(app, ["generate", "--run-dir", str(run), "--fresh", "--problems", "mbpp",
                                   "--split", "test", "--end", "2", "--model", str(tiny_chat_dir),
                                   "--num-seqs", "1", "--max-new-tokens", "4", "--batch-size", "4",
                                   "--seed", "0"])
    assert res.exit_code == 0, res.output
    lines.clear()
    run_pipeline(load_config(path), echo=lines.append)
    assert not any(l.startswith("[2/3] execute") and l.endswith("skipped") for l in lines), lines
    assert any("samples was rewritten" in l for l in lines), lines


def test_refusals_name_the_key_and_fresh_validates_first(tiny_chat_dir, tmp_path):
    path, cfg = _tiny(tmp_path, tiny_chat_dir)
    run_pipeline(load_config(path), echo=lambda s: None)
    run = tmp_path / "runs" / "tiny"
    before = (run / "samples.jsonl").read_text()
    cfg["generation"]["temperature"] = 0.5
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"temperature: 0\.8 -> 0\.5.*--fresh --from generate"):
        run_pipeline(load_config(path), echo=lambda s: None)
    # a config that cannot run is refused before --fresh deletes anything
    cfg["rl"] = {"init": "sft", "critic_weights": True}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="critic_weights needs the critic scores"):
        run_pipeline(load_config(path), echo=lambda s: None, fresh=True)
    assert (run / "samples.jsonl").read_text() == before


@pytest.mark.parametrize("later", ["rl", "expert"])
def test_gold_style_must_agree_with_sft(tmp_path, later):
    """RL's CE steps / expert iteration's validation on another gold layout than SFT's: refused
    before any stage runs, naming both keys; the same style on both loads."""
    path = tmp_path / "c.yaml"
    cfg = {"name": "g", "runs_dir": str(tmp_path / "runs"), "sft": {"gold_style": "normalized"},
           later: {"gold_style": "raw", **({"critic_weights": False} if later == "rl" else {})}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=rf"{later}\.gold_style 'raw' differs from sft\.gold_style 'normalized'"):
        load_config(path)
    cfg[later]["gold_style"] = "normalized"
    path.write_text(yaml.safe_dump(cfg))
    assert getattr(load_config(path), later).gold_style == "normalized"


@pytest.mark.parametrize("later", ["rl", "expert"])
@pytest.mark.parametrize("trained", ["normalized", None])  # None: an older box, fingerprinted without it (raw)
def test_gold_style_must_agree_with_the_sft_box(tmp_path, later, trained):
    """The separate verbs (no pipeline config holding both sections): train-rl / train-expert
    starting from a train-actor box recorded with another gold_style are refused before their own
    box is touched, naming the box, both styles and the fix; the recorded style goes on."""
    from coderl.stage import run_stage

    run = RunDir(tmp_path / "run").mkdir()
    run.sft.mkdir()
    (run.sft / "adapter_config.json").write_text("{}")
    write_meta(run.sft, "train-actor", {"config": {"lr": 2e-4, **({"gold_style": trained} if trained else {})}},
               complete=True)
    stage = next(s for s in STAGES if s.section == later)
    recorded = trained or "raw"
    other = "raw" if recorded == "normalized" else "normalized"
    extra = {"critic_weights": False} if later == "rl" else {}
    key = "rl.init" if later == "rl" else "expert.model"
    cfg = stage.config_class()(**{("init" if later == "rl" else "model"): "sft", "gold_style": other, **extra})
    with pytest.raises(ConfigError, match=rf"{key} 'sft' \({run.sft}\) was trained with gold_style "
                                          rf"'{recorded}', but {later}\.gold_style is '{other}'.*--gold-style {recorded} "
                                          rf"\(a recipe: {later}\.gold_style: {recorded}\)"):
        run_stage(stage, [], run, cfg, StageContext(echo=lambda s: None))
    assert not any(run.box(b).exists() or (run.root / f"{run.box(b).name}.meta.json").exists() for b in stage.writes)
    cfg = stage.config_class()(**{("init" if later == "rl" else "model"): "sft", "gold_style": recorded, **extra})
    with pytest.raises(Exception) as e:  # past the check: it fails later for want of samples
        run_stage(stage, [], run, cfg, StageContext(echo=lambda s: None))
    assert "was trained with gold_style" not in str(e.value)


def test_recorded_gold_style_reads_only_model_boxes(tmp_path, monkeypatch):
    """The starting model's recorded layout: train-actor / train-rl / train-expert boxes (absent in
    the fingerprint: raw); any other spec (the default, ".", "/", a GGUF file, a hub-like name, a
    box of another stage) is not a box with a layout, and never an error."""
    from coderl.training.options import recorded_gold_style

    monkeypatch.chdir(tmp_path)
    for stage, fp, expected in [("train-actor", {"gold_style": "normalized"}, "normalized"),
                                ("train-rl", {}, "raw"), ("train-expert", {"gold_style": "raw"}, "raw"),
                                ("train-online", {"lr": 1.0}, None)]:
        box = tmp_path / stage
        box.mkdir()
        write_meta(box, stage, {"config": fp}, complete=True)
        assert recorded_gold_style(str(box)) == expected and recorded_gold_style(stage) == expected  # relative too
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    for spec in ("default", ".", "/", "..", "m.gguf", "org/name", "~", "", None):
        assert recorded_gold_style(spec) is None


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden"])
def test_a_run_name_is_one_directory(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": name, "runs_dir": str(tmp_path / "runs")}))
    with pytest.raises(ConfigError, match="must be one directory name"):
        load_config(path)


def test_run_models_are_named_by_alias(tmp_path):
    """generation.model: sft means this run's sft/, whatever the run is called or where it lies."""
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "moved" / "b")
    assert a.model("sft") == str(tmp_path / "a" / "sft") and b.model("sft") == str(tmp_path / "moved" / "b" / "sft")
    assert a.model("default") == "default"
    from coderl.generation.stage import reads

    assert reads(dataclasses.replace(load_config_defaults("generation"), model="sft")) == ("sft",)


def load_config_defaults(section):
    return next(s for s in STAGES if s.section == section).config_class()()


def test_yaml_number_as_text_gets_a_hint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nsft:\n  lr: 1e-5\n")
    with pytest.raises(ConfigError, match=r"sft\.lr: expected .* got str '1e-5' \(YAML reads 1e-5 as text.*1\.0e-5"):
        load_config(path)


def test_cli_null_for_an_optional_setting_is_none(tmp_path, monkeypatch):
    """--val-source null disables validation (the help says so); it is not the source 'null'."""
    import coderl.stage

    seen = {}
    monkeypatch.setattr(coderl.stage, "run_stage", lambda st, problems, run, cfg, ctx, redo: seen.update(cfg=cfg))
    r = CliRunner().invoke(app, ["train-actor", "--run-dir", str(tmp_path), "--problems", "mbpp", "--split",
                                 "train", "--end", "1", "--val-source", "null"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].val_source is None


def test_cli_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "S").write_text('{"problem_id": "mbpp/11", "index": 0, "program": "x = 1"}\n')
    r = CliRunner().invoke(app, ["execute", "--problems", "mbpp", "--split", "test", "--end", "1",
                                 "--samples", str(tmp_path / "S"), "--out", str(tmp_path / "S" / "results.jsonl"),
                                 "--workers", "1"])
    assert r.exit_code == 2 and "is not a directory" in r.output and "Traceback" not in r.output, r.output
    assert (tmp_path / "S").read_text().startswith('{"problem_id"')


def test_cli_scores_paths_are_checked(tmp_path):
    (tmp_path / "S").write_text('{"problem_id": "mbpp/11", "index": 0, "program": "x = 1"}\n')
    (tmp_path / "D").mkdir()
    r = CliRunner().invoke(app, ["critic-score", "--problems", "mbpp", "--split", "test", "--end", "1",
                                 "--samples", str(tmp_path / "S"), "--out", str(tmp_path / "D")])
    assert r.exit_code == 2 and "is a directory, not a file" in r.output, r.output
    from coderl.critic.scores import read_scores
    from coderl.io import RecordError

    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(RecordError, match="not a critic scores file") as e:
        read_scores(tmp_path / "bad.npz")
    assert "pickle" not in str(e.value)


def test_help_does_not_call_a_required_option_defaulted():
    r = CliRunner().invoke(app, ["train-actor", "--help"], env={"COLUMNS": "200"})
    problems = r.output[r.output.index("--problems"):r.output.index("--path")]
    assert "(default: mbpp)" not in problems and "required by a verb" in problems


def test_evaluate_compare_without_common_problems_is_an_error(tmp_path):
    from coderl.evaluation.eval_config import EvalConfig
    from coderl.evaluation.stage import compare_reports

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps({"per_problem": {"x/1": {"n": 1}}}))
    with pytest.raises((ConfigError, ValueError), match="no problem in common|not a coderl report"):
        compare_reports(tmp_path / "other", {"per_problem": {}}, tmp_path / "c.json", EvalConfig())


def test_typing_the_default_is_the_same_setting():
    """lr: null means the mode's default; typing that value (--lr 5e-5) is the same run, not
    'other settings'."""
    from coderl.pipeline import BY_NAME
    from coderl.stage import default_fingerprint
    from coderl.training.rl_config import RLConfig

    st = BY_NAME["train-rl"]
    assert default_fingerprint(st, [], RLConfig()) == default_fingerprint(st, [], RLConfig(lr=5e-5))
    assert default_fingerprint(st, [], RLConfig()) != default_fingerprint(st, [], RLConfig(lr=1e-4))


def test_the_pipeline_help_lists_the_stage_table_in_order():
    out = " ".join(CliRunner().invoke(app, ["pipeline", "--help"], terminal_width=400).output.split())
    assert " -> ".join(st.name for st in STAGES) in out
