"""The ``compare-models`` stage: the run's models (base, SFT, RL) side by side on held-out problems.

    summary = compare_models(run_dir, cfg, exec_cfg, base_model="default")

Each model generates (greedy, plus ``num_seqs`` samples) on the same problems, executed and
evaluated in ``<run>/compare/<label>/`` (resumable; redone when the model's files change);
``<run>/compare.md`` / ``compare.json`` hold each metric per model with a bootstrap interval, the
difference to the first model with a paired-bootstrap 95% interval, and the greedy outcome mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Collection

from ..config import ConfigError, fingerprint as config_fingerprint
from ..execution.codes import OUTCOMES
from ..io import atomic_write_text
from ..rundir import RunDir
from .compare import ProblemStats, bootstrap_interval, metric_pairs, paired_bootstrap, ratio
from .models_config import NOT_FINGERPRINTED, RUN_MODELS, ModelsEvalConfig

MODEL_META = "model.json"


def model_spec(run_dir: str | Path, name: str, base_model: str) -> str:
    """What an entry of ``compare.models`` names: base, this run's sft/rl directory, or itself."""
    if name == "base":
        return base_model
    return str(Path(run_dir) / name) if name in RUN_MODELS else name


def resolve_models(run_dir: Path, cfg: ModelsEvalConfig, base_model: str) -> list[tuple[str, str]]:
    """``[(label, model spec)]``; this run's sft/rl must exist."""
    out = []
    for m in cfg.models:
        spec = model_spec(run_dir, m, base_model)
        if m in RUN_MODELS and m != "base" and not Path(spec).is_dir():
            raise ConfigError(f"compare.models: {m!r} means {spec}, which does not exist (run the "
                              f"stage that writes it first, or drop {m!r} from compare.models)")
        out.append((m if m in RUN_MODELS else (Path(m).name or m).replace("/", "_"), spec))
    labels = [l for l, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"compare.models: {cfg.models} give the same label twice ({labels})")
    return out


def model_digest(spec: str) -> str:
    """A local model directory by its files' names, sizes and mtimes; a named model by its name."""
    p = Path(spec)
    if not p.is_dir():
        return spec
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def stage_fingerprint(problems, run: RunDir, cfg: ModelsEvalConfig, ctx) -> dict:
    """The stage contract's fingerprint: the settings and the execution settings."""
    return {"compare": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
            "execution": ctx.execution.fingerprint(), "base_model": ctx.base_model}


def inputs(problems, run: RunDir, cfg: ModelsEvalConfig, ctx) -> dict[str, str]:
    """The models compared, by digest: a retrained model's programs are regenerated."""
    out = {}
    for m in cfg.models:
        spec = model_spec(run.root, m, ctx.base_model)
        if Path(spec).exists() or m not in RUN_MODELS:
            out[f"model:{m}"] = model_digest(spec)
    return out


def run(problems, run: RunDir, cfg: ModelsEvalConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's models on held-out problems."""
    return compare_models(run.root, cfg, ctx.execution, base_model=ctx.base_model, train_ids=ctx.train_ids,
                          echo=ctx.echo)


def compare_models(run_dir: str | Path, cfg: ModelsEvalConfig, exec_cfg, *, base_model: str,
                   train_ids: Collection[str] = (), echo: Callable[[str], None] = print) -> dict[str, Any]:
    from ..execution.stage import execute
    from ..generation.generation_config import GenerationConfig
    from ..generation.stage import generate
    from ..problems.problems_config import ProblemsConfig
    from .eval_config import EvalConfig
    from .stage import evaluate

    run = RunDir(run_dir)
    run_dir = run.root
    sel = ProblemsConfig(source=cfg.source, split=cfg.split, start=cfg.start, end=cfg.end)
    problems = list(sel.load())
    if not problems:
        raise ConfigError(f"compare: no problems in {cfg.source} split {cfg.split} [{cfg.start}:{cfg.end}]")
    seen = sorted({str(p.id) for p in problems} & set(train_ids))
    if seen:
        raise ConfigError(f"compare: {len(seen)} of its {len(problems)} problems ({', '.join(seen[:3])}"
                          f"{', ...' if len(seen) > 3 else ''}) are problems this run trained on: a "
                          "comparison must be on held-out problems (choose another compare.split or range)")
    models = resolve_models(run_dir, cfg, base_model)
    ks = [1] + [k for k in (cfg.num_seqs,) if k > 1]
    per_model: dict[str, dict[str, Any]] = {}
    for label, spec in models:
        sub = RunDir(run.compare_dir / label)
        digest = model_digest(spec)
        meta_path = sub / MODEL_META
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("digest") != digest:
            echo(f"      {label}: {spec} changed since its programs were generated: regenerating")
            shutil.rmtree(sub.root)
        sub.mkdir()
        atomic_write_text(meta_path, json.dumps({"label": label, "model": spec, "digest": digest}) + "\n")
        echo(f"      {label} ({spec}): {len(problems)} problems x ({cfg.num_seqs} sampled + greedy) of {cfg.source}")
        gcfg = GenerationConfig(model=spec, num_seqs=cfg.num_seqs, greedy=True, batch_size=cfg.batch_size,
                                temperature=cfg.temperature, top_p=cfg.top_p, progress=cfg.progress,
                                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, threads=cfg.threads)
        generate(problems, sub.samples, gcfg, selection=dataclasses.asdict(sel), fresh_hint=f"delete {sub.root}")
        execute(problems, sub.samples, sub.results, exec_cfg, progress=cfg.progress)
        report = evaluate(problems, sub.results, sub.root, EvalConfig(ks=ks, n_at_k=[], plots=False, seed=cfg.seed),
                          samples_path=sub.samples, meta={"model": spec, "label": label})
        per_model[label] = {"model": spec, "outcomes": report["outcomes"].get("greedy", {}),
                            "stats": {pid: ProblemStats.from_dict(d) for pid, d in report["per_problem"].items()}}
    metrics = ["greedy_pass@1"] + [f"pass@{k}" for k in ks if cfg.num_seqs >= k and k > 1]
    if cfg.num_seqs:
        metrics.insert(1, "pass@1")
    if cfg.source == "mbpp-heldout":
        metrics.append("hack_rate")
    labels = [l for l, _ in models]
    rows, boot = [], {"resamples": cfg.resamples, "seed": cfg.seed}
    for m in metrics:
        pairs = {l: metric_pairs(per_model[l]["stats"], m) for l in labels}
        rows.append({"metric": m, "values": {l: {"value": ratio(pairs[l]), "ci": bootstrap_interval(pairs[l], **boot)}
                                             for l in labels},
                     "differences": {l: paired_bootstrap(pairs[labels[0]], pairs[l], metric=m, **boot).to_dict()
                                     for l in labels[1:]}})
    out = {"complete": True, "problems": {"source": cfg.source, "split": cfg.split, "start": cfg.start,
                                          "end": cfg.end, "count": len(problems)},
           "models": {l: per_model[l]["model"] for l in labels}, "rows": rows,
           "outcomes": {l: per_model[l]["outcomes"] for l in labels}, "resamples": cfg.resamples}
    text = render(out)
    atomic_write_text(run.compare_json, json.dumps(out, indent=1) + "\n")
    atomic_write_text(run.compare_md, text)
    for line in text.splitlines():
        echo(line)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def render(out: dict[str, Any]) -> str:
    labels = list(out["models"])
    p = out["problems"]
    head = ["metric"] + labels + [f"{l} - {labels[0]} [95% CI]" for l in labels[1:]]
    lines = [f"# {', '.join(labels)} on {p['count']} problems of {p['source']} ({p['split']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in out["rows"]:
        cells = [row["metric"]] + [_pct(row["values"][l]["value"]) for l in labels]
        for l in labels[1:]:
            d = row["differences"][l]
            star = " *" if d["significant"] else ""
            cells.append(f"{_signed(d['diff'])} [{_signed(d['low'])}, {_signed(d['high'])}]{star}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Percentages; intervals: paired bootstrap over problems ({out['resamples']} "
              "resamples), * = excludes 0. hack_rate: of the programs passing the example test, the "
              "share failing a hidden one (lower is better). At this size a difference of a few "
              "points is within noise: the learning scoreboard (benchmarks/learning.py) measures "
              "on every problem.", "",
              "Greedy programs by outcome:", "", "| model | " + " | ".join(OUTCOMES) + " |",
              "|---|" + "---|" * len(OUTCOMES)]
    for l in labels:
        oc = out["outcomes"][l]
        lines.append(f"| {l} | " + " | ".join(str(oc.get(o, 0)) for o in OUTCOMES) + " |")
    return "\n".join(lines) + "\n"


show = None  # the stage echoes its table itself
