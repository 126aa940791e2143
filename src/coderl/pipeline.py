"""The whole loop from one YAML config: generate -> execute -> evaluate, in ``runs/<name>/``.

    coderl pipeline configs/mbpp_smollm2_eval_cpu.yaml

A config has a ``name`` and one section per stage; every key maps to a dataclass field::

    name: mbpp_smollm2_eval_cpu
    problems:   {source: mbpp, split: test, start: 0, end: 40}      # load_problems arguments
    generation: {model: default, num_seqs: 5, temperature: 0.8}    # GenerationConfig
    execution:  {timeout: 4}                                       # ExecConfig
    evaluation: {ks: [1, 5]}                                       # EvalConfig

The run directory holds ``config.yaml`` (what ran), ``samples.jsonl``, ``results.jsonl``,
``report.md`` / ``report.json`` and plots. Every stage resumes: rerunning a killed pipeline
skips the finished (problem, index) pairs. Later issues add stages (critic, RL, critic sampling)
to the same file and config.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .evaluation.stage import EvalConfig, evaluate, pass_table
from .generation.stage import GenerationConfig, generate


class ConfigError(ValueError):
    """A bad pipeline config; the message names the file and the key."""


@dataclass
class ProblemsConfig:
    source: str = "mbpp"          # mbpp | humaneval | apps | a JSONL file or APPS folder
    path: str | None = None
    split: str | None = None
    difficulties: list[str] | None = None
    start: int | None = None
    end: int | None = None
    ids: list[str] | None = None


@dataclass
class PipelineConfig:
    name: str
    problems: ProblemsConfig = field(default_factory=ProblemsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    execution: dict[str, Any] = field(default_factory=dict)  # ExecConfig fields
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    runs_dir: str = "runs"

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _fill(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline YAML; ``overrides`` like ``{"generation.num_seqs": 2}`` win over it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key:
            raw.setdefault(section, {})
            raw[section][key] = value
        else:
            raw[section] = value
    allowed = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}")
    if not raw.get("name"):
        raise ConfigError(f"{path}: the config needs a 'name' (the run directory runs/<name>/)")
    cfg = PipelineConfig(
        name=str(raw["name"]), runs_dir=str(raw.get("runs_dir", "runs")),
        problems=_fill(ProblemsConfig, raw.get("problems"), f"{path}: problems"),
        generation=_fill(GenerationConfig, raw.get("generation"), f"{path}: generation"),
        execution=dict(raw.get("execution") or {}),
        evaluation=_fill(EvalConfig, raw.get("evaluation"), f"{path}: evaluation"))
    try:
        cfg.generation.validate()
        cfg.evaluation.parsed_n_at_k()
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    from .execution import ExecConfig

    try:
        ExecConfig.from_dict(cfg.execution)
    except TypeError as e:
        raise ConfigError(f"{path}: execution: {e}") from None
    return cfg


def load_config_problems(pc: ProblemsConfig):
    from .problems import load_problems

    return load_problems(pc.source, path=pc.path, split=pc.split, difficulties=pc.difficulties,
                         start=pc.start, end=pc.end, ids=pc.ids)


def run_pipeline(cfg: PipelineConfig, *, echo=print) -> dict[str, Any]:
    """Run generate -> execute -> evaluate for ``cfg``; returns the evaluation report."""
    from .execution import ExecConfig
    from .execution.stage import execute

    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    timings: dict[str, float] = {}

    t = time.time()
    problems = load_config_problems(cfg.problems)
    echo(f"[1/3] generate: {len(problems)} problems x ({cfg.generation.num_seqs} sampled"
         f"{' + 1 greedy' if cfg.generation.greedy else ''}) with model {cfg.generation.model!r}")
    gen = generate(problems, run / "samples.jsonl", cfg.generation)
    timings["generate_s"] = round(time.time() - t, 1)
    if gen.get("tokens"):
        echo(f"      {gen['sequences']} sequences, {gen['tokens']} tokens, {gen['tokens_per_s']} tok/s")

    t = time.time()
    echo("[2/3] execute")
    try:
        exec_cfg = ExecConfig.from_dict(cfg.execution)
    except TypeError as e:
        raise ConfigError(f"execution: {e}") from None
    summary = execute(problems, run / "samples.jsonl", run / "results.jsonl", exec_cfg,
                      progress=cfg.generation.progress)
    timings["execute_s"] = round(time.time() - t, 1)

    t = time.time()
    echo("[3/3] evaluate")
    meta = {"name": cfg.name, "model": cfg.generation.model, "problems": len(problems),
            "generation": {k: v for k, v in dataclasses.asdict(cfg.generation).items()
                           if k not in ("progress",)},
            "generation_summary": gen, "isolation": summary.get("isolation"), **timings}
    report = evaluate(problems, run / "results.jsonl", run, cfg.evaluation,
                      samples_path=run / "samples.jsonl", meta=meta)
    timings["evaluate_s"] = round(time.time() - t, 1)
    report["timings"] = timings
    echo("")
    echo(pass_table(report))
    echo("")
    echo(f"report: {report['report_path']}  (json: {run / 'report.json'})")
    echo("timings: " + json.dumps(timings))
    return report
