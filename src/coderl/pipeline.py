"""The whole loop from one YAML config: the table of stages, run in ``runs/<name>/``.

    coderl pipeline configs/mbpp_smollm2_eval_cpu.yaml [--from execute] [--until evaluate] [--fresh]

A config has a ``name`` and one section per stage (its config dataclass's fields, validated
before any work). :data:`STAGES` is the table (ARCHITECTURE.md): the pipeline's order, ``--from``
/ ``--until`` and the CLI's stage verbs come from it; whether a stage runs is
:func:`coderl.stage.run_stage`'s rule. A new stage is one config file, one module and one row.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, from_dict
from .io import atomic_write_text
from .problems.problems_config import ProblemsConfig
from .rundir import RunDir
from .stage import Stage, StageContext, run_stage

# a verb's options that put a box elsewhere: (box, flag, help)
_SAMPLES = ("samples", "--samples", "Samples JSONL (problem_id, index, program).")
_RESULTS = ("results", "--results", "Results JSONL (coderl execute).")
STAGES: list[Stage] = [
    Stage("train-actor", "sft", "coderl.training.sft_config:SFTConfig", "coderl.training.sft_trainer",
          reads=(), writes=("sft",), grows=("max_steps",), shared=("execution",),
          help="SFT warm-up: fine-tune the actor on the gold programs of the problems, in the prompt "
               "format generation uses (resumable)."),
    Stage("generate", "generation", "coderl.generation.generation_config:GenerationConfig",
          "coderl.generation.stage", reads=("sft", "rl"), writes=("samples",), optional=False,
          files=(("samples", "--out", "Samples JSONL (appended; a rerun resumes)."),),
          help="Sample programs from a model: num_seqs per problem plus a greedy one (resumable)."),
    Stage("execute", "execution", "coderl.execution.exec_config:ExecConfig", "coderl.execution.stage",
          reads=("samples",), writes=("results",), optional=False, incremental=True,
          files=(_SAMPLES, ("results", "--out", "Results JSONL (appended; a rerun resumes).")),
          help="Run sampled programs against their problems' tests in the sandbox: one Result per "
               "sample (resumable)."),
    Stage("evaluate", "evaluation", "coderl.evaluation.eval_config:EvalConfig", "coderl.evaluation.stage",
          reads=("samples", "results"), writes=("report_json", "report_md"), optional=False, always=True,
          files=(_RESULTS, _SAMPLES), run_dir_flag="--out-dir",
          help="pass@k, n@k with example-test filtering, hack rate, breakdowns and plots: report.md / "
               "report.json (--compare RUN: differences with paired-bootstrap intervals)."),
    Stage("train-critic", "critic", "coderl.critic.critic_config:CriticConfig", "coderl.critic.critic_trainer",
          reads=("samples", "results"), writes=("critic",), grows=("max_steps",), files=(_SAMPLES, _RESULTS),
          help="Train the critic (problem + program -> test outcome, a value per program token); "
               "held-out metrics and baselines in critic/metrics.json (resumable)."),
    Stage("critic-score", "critic_score", "coderl.critic.score_config:ScoreConfig", "coderl.critic.scoring",
          reads=("samples", "results", "critic"), writes=("critic_scores",),
          files=(_SAMPLES, _RESULTS, ("critic_scores", "--out", "Scores file (.npz).")),
          help="Per sample: class probabilities and per-token values q̂ (of the actual outcome, and of "
               "passed), float16 in an .npz (resumable)."),
    Stage("train-rl", "rl", "coderl.training.rl_config:RLConfig", "coderl.training.rl_trainer",
          reads=("samples", "results", "critic_scores", "sft"), writes=("rl",), grows=("max_steps",),
          shared=("execution",),
          files=(_SAMPLES, _RESULTS, ("critic_scores", "--scores", "Critic scores (coderl critic-score).")),
          help="CodeRL's offline RL: -(r(W^s) - r(W^b)) q̂(w_t) log p(w_t), alternating with "
               "cross-entropy steps on gold programs (resumable)."),
    Stage("train-expert", "expert", "coderl.training.expert_config:ExpertConfig", "coderl.training.expert_trainer",
          reads=("samples", "results"), writes=("expert",), grows=("max_steps",), shared=("execution",),
          files=(_SAMPLES, _RESULTS),
          help="Expert iteration (rejection-sampling fine-tuning): the model that sampled, fine-tuned on "
               "its own programs that passed their tests (resumable)."),
    Stage("train-online", "online", "coderl.training.online_config:OnlineConfig", "coderl.training.online_trainer",
          reads=("sft",), writes=("online",), grows=("max_steps",), shared=("execution",),
          help="Online RL: rounds of sampling with the current policy, executing, rewarding (group or "
               "CodeRL advantages) and one update, with a KL term to the starting model (resumable "
               "at its round)."),
    Stage("train-repair", "repair", "coderl.critic_sampling.repair_config:RepairConfig",
          "coderl.critic_sampling.repair_trainer", reads=("samples", "results"), writes=("repair",),
          grows=("max_steps",), files=(_SAMPLES, _RESULTS),
          help="The repair model of critic sampling: the actor fine-tuned on (problem, failed program, "
               "its verdict) -> a passing program, from the run's executed samples (resumable)."),
    Stage("critic-sample", "critic_sample", "coderl.critic_sampling.cs_config:CriticSamplingConfig",
          "coderl.critic_sampling.cs_stage", reads=(), writes=("critic_sampling",), takes_problems=False,
          shared=("execution",),
          help="CodeRL's critic sampling on held-out problems: sample, refine (critic-chosen prefixes) "
               "and repair failed programs in rounds under a budget of programs per problem, running "
               "only example tests; submit the critic's best; then judge them on the hidden tests."),
    Stage("compare-models", "compare", "coderl.evaluation.models_config:ModelsEvalConfig",
          "coderl.evaluation.models_stage", reads=(), writes=("compare_json", "compare_dir"),
          takes_problems=False, incremental=True, shared=("execution",),
          help="Base vs SFT vs RL (or any models) side by side on held-out problems: greedy pass@1 "
               "(and pass@k), hack rate and outcome mix, with paired-bootstrap intervals (resumable)."),
]
BY_NAME = {s.name: s for s in STAGES}
BY_SECTION = {s.section: s for s in STAGES}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class PipelineConfig:
    name: str
    problems: ProblemsConfig = field(default_factory=ProblemsConfig)
    sections: dict[str, Any] = field(default_factory=dict)  # section -> config (the enabled stages)
    runs_dir: str = "runs"

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def __getattr__(self, name: str) -> Any:  # cfg.generation, cfg.rl, ...: a section or None
        if name in BY_SECTION:
            return self.__dict__.get("sections", {}).get(name)
        raise AttributeError(name)

    def stages(self) -> list[Stage]:
        return [s for s in STAGES if s.section in self.sections]

    def section(self, name: str) -> Any:
        return self.sections.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runs_dir": self.runs_dir, "problems": dataclasses.asdict(self.problems),
                **{k: dataclasses.asdict(v) for k, v in self.sections.items()}}

    @property
    def base_model(self) -> str:
        """The model the run starts from: the SFT stage's, else the generating one."""
        first = self.section("sft") or self.section("generation")
        return first.model if first is not None else "default"


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


def _read_yaml(path: Path) -> dict:
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
    return raw


def _apply(raw: dict, overrides: dict[str, Any], path: Path) -> None:
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        d = raw
        for part in parts[:-1]:
            if d.get(part) is None:
                d[part] = {}
            if not isinstance(d[part], dict):
                raise ConfigError(f"{path}: --set {dotted}: {part!r} is not a section")
            d = d[part]
        d[parts[-1]] = value


#: top-level keys of a recipe that set generation's and execution's own (a section's value wins)
BACKEND_KEYS = ("backend", "ray_address", "ray_actors")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; ``overrides`` (``{"generation.num_seqs": 2}``) win.
    ``backend: ray`` (``ray_address``, ``ray_actors``) at the top sets both sections' own."""
    path = Path(path)
    raw = _read_yaml(path)
    _apply(raw, overrides or {}, path)
    for key in BACKEND_KEYS:  # where the work runs, for every section that has the setting
        if key in raw:
            value = raw.pop(key)
            for sec in ("generation", "execution"):
                if raw.get(sec) is None:
                    raw[sec] = {}
                if isinstance(raw[sec], dict):
                    raw[sec].setdefault(key, value)
    allowed = {"name", "runs_dir", "problems", *BY_SECTION}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}")
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{path}: the config needs a 'name' (the run directory runs/<name>/)")
    if not NAME_RE.match(name) or ".." in name:
        raise ConfigError(f"{path}: name {name!r} must be one directory name (letters, digits, . _ -; "
                          "no '/' and no '..'): the run goes to runs_dir/<name>/")
    if not isinstance(raw.get("runs_dir", "runs"), str):
        raise ConfigError(f"{path}: runs_dir must be a string")
    sections = {st.section: from_dict(st.config_class(), raw.get(st.section), f"{path}: {st.section}")
                for st in STAGES if st.section in raw or not st.optional}
    cfg = PipelineConfig(name=name, runs_dir=raw.get("runs_dir", "runs"), sections=sections,
                         problems=from_dict(ProblemsConfig, raw.get("problems"), f"{path}: problems"))
    check_needs(cfg, path)
    return cfg


def check_needs(cfg: PipelineConfig, where: Any = "config") -> None:
    """What a section needs of the others, before any stage runs (and before --fresh deletes)."""
    s = cfg.section
    uses = []
    if s("generation") is not None:
        uses.append(("generation.model", s("generation").model))
    if s("rl") is not None:
        uses.append(("rl.init", s("rl").init))
        if s("rl").critic_weights and s("critic_score") is None:
            raise ConfigError(f"{where}: rl.critic_weights needs the critic scores: add the critic and "
                              "critic_score sections, or set rl.critic_weights: false (q̂ = 1)")
    if s("compare") is not None:
        uses += [("compare.models", m) for m in s("compare").models]
    if s("sft") is not None:  # one layout of the gold programs across the stages that train or validate on them
        for later in ("rl", "expert"):
            if s(later) is not None and s(later).gold_style != s("sft").gold_style:
                raise ConfigError(f"{where}: {later}.gold_style {s(later).gold_style!r} differs from sft.gold_style "
                                  f"{s('sft').gold_style!r}: {later} would train or validate on gold programs in "
                                  "another layout than SFT trained on; set both to the same style")
    for key, value in uses:
        if value in ("sft", "rl") and s(value) is None:
            raise ConfigError(f"{where}: {key}: {value!r} is this run's {value}/ model, but the config "
                              f"has no {value} section to train it")
    if s("critic_score") is not None and s("critic") is None and str(s("critic_score").checkpoint) in ("best", "last"):
        raise ConfigError(f"{where}: critic_score: checkpoint {s('critic_score').checkpoint!r} names this "
                          "run's critic, but the config has no critic section")


def stage_names(cfg: PipelineConfig | None = None) -> list[str]:
    return [s.name for s in (cfg.stages() if cfg is not None else STAGES)]


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
    return [BY_NAME[n] for n in names[i:j]]


def _context(cfg: PipelineConfig, problems: list, echo) -> StageContext:
    hint = f"coderl pipeline <config> --fresh --from {{stage}} (or another name than {cfg.name!r})"
    train_ids = frozenset(str(p.id) for p in problems) if (cfg.section("sft") or cfg.section("rl")) else frozenset()
    base = (cfg.section("compare").base_model if cfg.section("compare") is not None else None) or cfg.base_model
    return StageContext(echo=echo, execution=cfg.section("execution"), base_model=base,
                        train_ids=train_ids, selection=dataclasses.asdict(cfg.problems), fresh_hint=hint,
                        run_meta={"name": cfg.name, "generation": cfg.section("generation")})


def run_pipeline(cfg: PipelineConfig, *, echo=print, start: str | None = None,
                 until: str | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run the stages of ``cfg`` (all, or ``start`` .. ``until``); returns the last summary."""
    stages = select_stages(start, until, cfg)
    check_needs(cfg)
    problems = list(cfg.problems.load())
    run, names = RunDir(cfg.run_dir), stage_names(cfg)
    before = {b for s in cfg.stages()[:names.index(stages[0].name)] for b in s.writes}  # by stages not run
    missing = [b for b in stages[0].reads if b in before and not run.box(b).exists()]
    if missing:
        raise ConfigError(f"stage {stages[0].name} reads {', '.join(str(run.box(b)) for b in missing)}, "
                          "which does not exist: run the stages before it first (drop --from)")
    run.mkdir()
    atomic_write_text(run.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    ctx = _context(cfg, problems, echo)
    timings: dict[str, float] = ctx.run_meta.setdefault("timings", {})
    last: dict[str, Any] = {}
    for st in stages:
        t = time.time()
        summary = run_stage(st, problems if st.takes_problems else [], run, cfg.section(st.section), ctx,
                            redo=fresh, header=f"[{names.index(st.name) + 1}/{len(names)}] {st.name}")
        if summary is not None:
            timings[st.name] = round(time.time() - t, 1)
            ctx.summaries[st.name] = last = summary
    echo("timings: " + json.dumps(timings))
    return {**last, "timings": timings}


def run_facts(run: RunDir) -> tuple[str, frozenset[str]]:
    """From a run's ``config.yaml``: the model it started from and the problems it trains on."""
    if not run.config.is_file():
        return "default", frozenset()
    try:
        raw = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
        first = raw.get("sft") or raw.get("generation") or {}
        trains = "sft" in raw or "rl" in raw
        ids = frozenset(str(p.id) for p in from_dict(ProblemsConfig, raw.get("problems"), "").load()) \
            if trains else frozenset()
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f"{run.config}: unreadable run config ({e})") from None
    return str(first.get("model") or "default"), ids
