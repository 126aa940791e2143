"""The whole loop from one YAML config, as a table of stages, in ``runs/<name>/``.

    coderl pipeline configs/mbpp_smollm2_eval_cpu.yaml [--from execute] [--until evaluate] [--fresh]

A config has a ``name`` and one section per stage; every key maps to a field of that stage's
config dataclass (validated before any work starts, naming the key)::

    name: mbpp_smollm2_eval_cpu
    problems:   {source: mbpp, split: test, start: 0, end: 40}      # ProblemsConfig
    generation: {model: default, num_seqs: 5, temperature: 0.8}    # GenerationConfig
    execution:  {timeout: 4}                                       # ExecConfig
    evaluation: {ks: [1, 5]}                                       # EvalConfig

:data:`STAGES` is the table: a stage's name, the function that runs it, the boxes it reads and
writes (names of :class:`~coderl.rundir.RunDir` files). The ``[i/n]`` counters, skip-if-complete,
``--from`` / ``--until`` and ``--fresh`` follow from it; a new stage is one row. A stage whose
boxes are complete under the same settings is skipped, unless a box it reads was rewritten in
this invocation; a box written under other settings stops the run with what differs (``--fresh``
starts the stages again from ``--from``, deleting their boxes).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import ConfigError, fingerprint as config_fingerprint, from_dict
from .evaluation.eval_config import EvalConfig
from .generation.generation_config import GenerationConfig
from .problems.problems_config import ProblemsConfig
from .rundir import RunDir, check_resume, is_complete, remove_box, write_meta


def _exec_config_cls():
    from .execution import ExecConfig

    return ExecConfig


@dataclass
class PipelineConfig:
    name: str
    problems: ProblemsConfig = field(default_factory=ProblemsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    execution: Any = None  # ExecConfig (imported lazily: the execution package is heavy-ish)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    critic: Any = None         # CriticConfig: the train-critic stage runs when the YAML has the section
    critic_score: Any = None   # ScoreConfig: the critic-score stage (needs critic)
    sft: Any = None            # SFTConfig: the train-actor stage (SFT warm-up), first when present
    rl: Any = None             # RLConfig: the train-rl stage (CodeRL's loss)
    compare: Any = None        # ModelsEvalConfig: base / SFT / RL side by side on held-out problems, last
    runs_dir: str = "runs"

    def __post_init__(self) -> None:
        if self.execution is None:
            self.execution = _exec_config_cls()()

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"problems": ProblemsConfig, "generation": GenerationConfig, "evaluation": EvalConfig}


def _optional_sections() -> dict[str, type]:
    """Sections whose stages run only when the YAML has them."""
    from .critic import CriticConfig, ScoreConfig
    from .evaluation.models_config import ModelsEvalConfig
    from .training import RLConfig, SFTConfig

    return {"critic": CriticConfig, "critic_score": ScoreConfig, "sft": SFTConfig, "rl": RLConfig,
            "compare": ModelsEvalConfig}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["generation.num_seqs=2", ...]`` -> ``{"generation.num_seqs": 2}`` (values are YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline YAML; ``overrides`` like ``{"generation.num_seqs": 2}`` win over it.
    Every section is validated here, before any work starts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        d = raw
        for part in parts[:-1]:
            if d.get(part) is None:
                d[part] = {}
            if not isinstance(d[part], dict):
                raise ConfigError(f"{path}: --set {dotted}: {part!r} is not a section")
            d = d[part]
        d[parts[-1]] = value
    allowed = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}")
    if not raw.get("name") or not isinstance(raw["name"], str):
        raise ConfigError(f"{path}: the config needs a 'name' (the run directory runs/<name>/)")
    if not isinstance(raw.get("runs_dir", "runs"), str):
        raise ConfigError(f"{path}: runs_dir must be a string")
    sections = {k: from_dict(cls, raw.get(k), f"{path}: {k}") for k, cls in SECTIONS.items()}
    sections["execution"] = _exec_from_dict(raw.get("execution"), f"{path}: execution")
    for key, cls in _optional_sections().items():
        if key in raw:
            sections[key] = from_dict(cls, raw[key], f"{path}: {key}")
    if sections.get("critic_score") is not None and sections.get("critic") is None and \
            str(sections["critic_score"].checkpoint) in ("best", "last"):
        raise ConfigError(f"{path}: critic_score: checkpoint {sections['critic_score'].checkpoint!r} "
                          "names this run's critic, but the config has no critic section")
    return PipelineConfig(name=raw["name"], runs_dir=raw.get("runs_dir", "runs"), **sections)


def _exec_from_dict(data: Any, where: str):
    cls = _exec_config_cls()
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    try:
        return cls.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


# -- the stages ---------------------------------------------------------------------------------

@dataclass
class Context:
    cfg: PipelineConfig
    run: RunDir
    problems: list
    echo: Callable[[str], None]
    fresh_hint: str
    summaries: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], dict]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    fingerprint: Callable[[Context], dict]
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True
    complete: Callable[[Context], bool] | None = None  # default: every written box is complete


def _gen_fp(ctx: Context) -> dict:
    from .generation.stage import fingerprint

    return fingerprint(ctx.problems, ctx.cfg.generation)


def _run_generate(ctx: Context) -> dict:
    from .generation.stage import generate

    g = ctx.cfg.generation
    ctx.echo(f"      {len(ctx.problems)} problems x ({g.num_seqs} sampled"
             f"{' + 1 greedy' if g.greedy else ''}) with model {g.model!r}")
    summary = generate(ctx.problems, ctx.run.samples, g, selection=dataclasses.asdict(ctx.cfg.problems),
                       fresh_hint=ctx.fresh_hint)
    if summary.get("tokens"):
        ctx.echo(f"      {summary['sequences']} sequences, {summary['tokens']} tokens, "
                 f"{summary['tokens_per_s']} tok/s")
    return summary


def exec_fingerprint(cfg) -> dict:
    """The execution settings that decide the verdicts (not the worker count or cache file)."""
    return cfg.fingerprint()


def _exec_fp(ctx: Context) -> dict:
    return exec_fingerprint(ctx.cfg.execution)


def _run_execute(ctx: Context) -> dict:
    from .execution.stage import execute

    fp = _exec_fp(ctx)
    check_resume(ctx.run.results, "execute", fp, fresh_hint=ctx.fresh_hint)
    write_meta(ctx.run.results, "execute", fp, complete=False)
    summary = execute(ctx.problems, ctx.run.samples, ctx.run.results, ctx.cfg.execution,
                      progress=ctx.cfg.generation.progress)
    write_meta(ctx.run.results, "execute", fp, complete=True)
    return summary


def _eval_fp(ctx: Context) -> dict:
    return config_fingerprint(ctx.cfg.evaluation)


def _run_evaluate(ctx: Context) -> dict:
    from .evaluation.stage import evaluate, pass_table

    cfg = ctx.cfg
    gen = ctx.summaries.get("generate", {})
    meta = {"name": cfg.name, "model": cfg.generation.model, "problems": len(ctx.problems),
            "generation": {k: v for k, v in dataclasses.asdict(cfg.generation).items() if k != "progress"},
            "generation_summary": gen, "isolation": ctx.summaries.get("execute", {}).get("isolation"),
            **{f"{k}_s": v for k, v in ctx.summaries.get("_timings", {}).items()}}
    report = evaluate(ctx.problems, ctx.run.results, ctx.run.root, cfg.evaluation,
                      samples_path=ctx.run.samples, meta=meta)
    write_meta(ctx.run.report_json, "evaluate", _eval_fp(ctx), complete=True)
    ctx.echo("")
    ctx.echo(pass_table(report))
    ctx.echo("")
    ctx.echo(f"report: {report['report_path']}  (json: {ctx.run.report_json})")
    return report


def _critic_fp(ctx: Context) -> dict:
    from .critic.critic_config import NOT_FINGERPRINTED

    return config_fingerprint(ctx.cfg.critic, exclude=NOT_FINGERPRINTED)


def _critic_complete(ctx: Context) -> bool:
    from .critic import METRICS_FILE, critic_dir

    path = critic_dir(ctx.run.root) / METRICS_FILE
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _run_train_critic(ctx: Context) -> dict:
    from .critic import train_critic

    summary = train_critic(ctx.problems, ctx.run.root, ctx.cfg.critic, samples_path=ctx.run.samples,
                           results_path=ctx.run.results, echo=ctx.echo)
    v = summary.get("validation") or {}
    if v:
        ctx.echo(f"      held-out: accuracy {v.get('accuracy')}, AUROC {v.get('auroc')}")
    t = summary.get("test") or {}
    if t:
        ctx.echo(f"      test (not used to pick the epoch): accuracy {t.get('accuracy')}, AUROC {t.get('auroc')}")
    return summary


def _score_fp(ctx: Context) -> dict:
    from .critic.score_config import NOT_FINGERPRINTED

    return config_fingerprint(ctx.cfg.critic_score, exclude=NOT_FINGERPRINTED)


def _run_critic_score(ctx: Context) -> dict:
    from .critic import score

    summary = score(ctx.problems, ctx.run.root, ctx.cfg.critic_score, samples_path=ctx.run.samples,
                    results_path=ctx.run.results, out_path=ctx.run.critic_scores, echo=ctx.echo)
    write_meta(ctx.run.critic_scores, "critic-score", _score_fp(ctx), complete=True)
    return summary


def _trained(stage_dir: Path, cfg) -> bool:
    from .training.engine import run_is_done

    return run_is_done(stage_dir, cfg)


def _sft_fp(ctx: Context) -> dict:
    from .training.sft_config import NOT_FINGERPRINTED

    return config_fingerprint(ctx.cfg.sft, exclude=NOT_FINGERPRINTED)


def _run_sft(ctx: Context) -> dict:
    from .training import train_sft

    summary = train_sft(ctx.problems, ctx.run.root, ctx.cfg.sft, progress=ctx.cfg.sft.progress,
                        echo=ctx.echo, exec_config=ctx.cfg.execution)
    return summary


def _rl_fp(ctx: Context) -> dict:
    from .training.rl_config import NOT_FINGERPRINTED

    return config_fingerprint(ctx.cfg.rl, exclude=NOT_FINGERPRINTED)


def _run_rl(ctx: Context) -> dict:
    from .training import train_rl

    cfg = ctx.cfg.rl
    scores = ctx.run.critic_scores if cfg.critic_weights else None
    if cfg.critic_weights and not ctx.run.critic_scores.exists():
        raise ConfigError(f"rl.critic_weights: needs {ctx.run.critic_scores} (add the critic and "
                          "critic_score sections, or set rl.critic_weights: false for q̂ = 1)")
    return train_rl(ctx.problems, ctx.run.root, cfg, samples_path=ctx.run.samples,
                    results_path=ctx.run.results, scores_path=scores, progress=cfg.progress,
                    echo=ctx.echo, exec_config=ctx.cfg.execution)


def _base_model(cfg: PipelineConfig) -> str:
    """The model a run starts from: the SFT stage's, else the generating one."""
    return cfg.sft.model if cfg.sft is not None else cfg.generation.model


def _compare_fp(ctx: Context) -> dict:
    from .evaluation.models_stage import fingerprint

    return fingerprint(ctx.run.root, ctx.cfg.compare, exec_fingerprint(ctx.cfg.execution),
                       _base_model(ctx.cfg))


def _run_compare(ctx: Context) -> dict:
    from .evaluation.models_stage import compare_models

    fp = _compare_fp(ctx)
    write_meta(ctx.run.compare_json, "compare-models", fp, complete=False)
    out = compare_models(ctx.run.root, ctx.cfg.compare, ctx.cfg.execution,
                         base_model=_base_model(ctx.cfg), echo=ctx.echo)
    write_meta(ctx.run.compare_json, "compare-models", fp, complete=True)
    return out


STAGES: list[Stage] = [
    Stage("train-actor", _run_sft, reads=(), writes=("sft",), fingerprint=_sft_fp,
          enabled=lambda cfg: cfg.sft is not None, complete=lambda ctx: _trained(ctx.run.sft, ctx.cfg.sft)),
    Stage("generate", _run_generate, reads=("sft",), writes=("samples",), fingerprint=_gen_fp),
    Stage("execute", _run_execute, reads=("samples",), writes=("results",), fingerprint=_exec_fp),
    Stage("evaluate", _run_evaluate, reads=("samples", "results"), writes=("report_json", "report_md"),
          fingerprint=_eval_fp),
    Stage("train-critic", _run_train_critic, reads=("samples", "results"), writes=("critic",),
          fingerprint=_critic_fp, enabled=lambda cfg: cfg.critic is not None, complete=_critic_complete),
    Stage("critic-score", _run_critic_score, reads=("samples", "results", "critic"), writes=("critic_scores",),
          fingerprint=_score_fp, enabled=lambda cfg: cfg.critic_score is not None),
    Stage("train-rl", _run_rl, reads=("samples", "results", "critic_scores", "sft"), writes=("rl",),
          fingerprint=_rl_fp,
          enabled=lambda cfg: cfg.rl is not None, complete=lambda ctx: _trained(ctx.run.rl, ctx.cfg.rl)),
    # compare/ holds each model's programs: --fresh deletes it with the table
    Stage("compare-models", _run_compare, reads=("sft", "rl"), writes=("compare_json", "compare_dir"),
          fingerprint=_compare_fp, enabled=lambda cfg: cfg.compare is not None,
          complete=lambda ctx: is_complete(ctx.run.compare_json, _compare_fp(ctx))),
]


def stage_names(cfg: PipelineConfig | None = None) -> list[str]:
    return [s.name for s in STAGES if cfg is None or s.enabled(cfg)]


def select_stages(start: str | None, until: str | None, cfg: PipelineConfig | None = None) -> list[Stage]:
    """The stages from ``start`` to ``until`` (names), among those ``cfg`` enables."""
    names = stage_names(cfg)
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value!r}: not a stage of this config; its stages are {names}")
    i = names.index(start) if start else 0
    j = names.index(until) + 1 if until else len(names)
    if i >= j:
        raise ConfigError(f"--from {start!r} comes after --until {until!r} (stages: {names})")
    enabled = [s for s in STAGES if cfg is None or s.enabled(cfg)]
    return enabled[i:j]


def run_pipeline(cfg: PipelineConfig, *, echo=print, start: str | None = None,
                 until: str | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run the stages of ``cfg`` (all, or ``start`` .. ``until``); returns the last summary."""
    stages = select_stages(start, until, cfg)
    names = stage_names(cfg)
    run = RunDir(cfg.run_dir)
    if fresh:
        for st in stages:
            for box in st.writes:
                remove_box(run.box(box))
    run.mkdir()
    from .io import atomic_write_text

    atomic_write_text(run.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    t = time.time()
    problems = list(cfg.problems.load())
    ctx = Context(cfg, run, problems, echo, fresh_hint=f"coderl pipeline <config> --fresh"
                  + (f" --from {stages[0].name}" if start else "") + f" (or another name than {cfg.name!r})")
    timings: dict[str, float] = {}
    ctx.summaries["_timings"] = timings
    changed: set[str] = set()  # boxes (re)written in this invocation: their readers run again
    last: dict[str, Any] = {}
    n = len(names)
    # a box counts as an input only where an enabled stage of this config writes it (generate
    # reads sft/ only in a recipe with an sft section)
    producers = {b for s in STAGES if s.enabled(cfg) for b in s.writes}
    for st in stages:
        i = names.index(st.name) + 1
        missing = [b for b in st.reads if b in producers and not run.box(b).exists()]
        if missing:
            raise ConfigError(f"stage {st.name} reads {', '.join(str(run.box(b)) for b in missing)}, "
                              "which does not exist: run the stages before it first (drop --from)")
        fp = st.fingerprint(ctx)
        complete = st.complete(ctx) if st.complete else all(is_complete(run.box(b), fp) for b in st.writes)
        if complete and not (set(st.reads) & changed) and st.name != "evaluate":
            echo(f"[{i}/{n}] {st.name}: complete under the same settings, skipped")
            continue
        echo(f"[{i}/{n}] {st.name}")
        t = time.time()
        last = st.run(ctx)
        timings[st.name] = round(time.time() - t, 1)
        ctx.summaries[st.name] = last
        changed.update(st.writes)
    echo("timings: " + json.dumps(timings))
    last = dict(last)
    last["timings"] = timings
    return last
