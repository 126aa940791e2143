"""The ``critic-sample`` stage: CodeRL's inference procedure (paper §3.3), in rounds, under a
budget of generated programs per problem.

    summary = critic_sample(run, CriticSamplingConfig(budget=10, first=5, repair="self"), exec_cfg)

1. **Sample** ``first`` programs per problem with the actor; run them on the problem's *example*
   tests only (the hidden tests are never run before step 5).
2. **Refine**: the critic scores every program token (P(passed)); programs that pass the example
   tests (all programs with ``refine_failed``) are cut after their best token
   (:mod:`.prefixes`) and the actor continues them (prompt + prefix prefilled once per prefix).
3. **Repair**: programs that fail the example tests, most promising by the critic first, go to
   the repair model (or the actor itself, ``repair: self``) with the failure (:mod:`.repair`).
4. **Rounds**: each of ``rounds`` rounds spends an equal share of what is left of the budget;
   its slots go in turn to refinements and repairs (parents used least often first, then by the
   critic), or to fresh samples where a problem has no parent. ``enough`` stops a problem early.
5. **Submit** (:mod:`.submit`): the ``submit`` best programs per problem — those passing the
   example tests, by the critic's P(passed), then mean token log-probability; where none passes
   (or the problem has no example test) all programs by the critic. Then, and only then, every
   program runs on the hidden tests (``results.jsonl``), and the report says what was solved.

Everything lands in ``<run>/critic_sampling/``: ``samples.jsonl`` (every program a ``Sample``:
origin sampled / refined / repaired, ``meta``: round, parent, op, prefix_chars), ``examples.jsonl``
(their example-test Results), ``rounds.jsonl`` (one line per finished round), ``submissions.jsonl``,
``results.jsonl`` (hidden tests, after the submission), ``report.json`` / ``report.md``. A round
is written whole when it is done; a killed run resumes at its first unfinished round, which is
drawn again with the same seed, so the records are the same.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Collection

from ..config import ConfigError, fingerprint as config_fingerprint
from ..io import atomic_write_text
from ..records import Sample, read_results, read_samples, result_writer, sample_writer
from ..rundir import RunDir
from . import submit as submission
from .cs_config import NOT_FINGERPRINTED, CriticSamplingConfig
from .prefixes import best_cut, raw_prefix, token_ends, written_from
from .repair import feedback

SAMPLES, EXAMPLES, ROUNDS = "samples.jsonl", "examples.jsonl", "rounds.jsonl"


class CriticSamplingError(ConfigError):
    """Critic sampling cannot run with these inputs (the message names them)."""


# -- the stage contract -------------------------------------------------------------------------

def reads(cfg: CriticSamplingConfig) -> tuple[str, ...]:
    out = []
    if cfg.critic in ("best", "last"):
        out.append("critic")
    if cfg.repair == "run":
        out.append("repair")
    if cfg.model in RunDir.MODELS:
        out.append(cfg.model)
    return tuple(out)


def stage_fingerprint(problems, run: RunDir, cfg: CriticSamplingConfig, ctx) -> dict:
    return {"critic_sample": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
            "execution": ctx.execution.fingerprint()}


def inputs(problems, run: RunDir, cfg: CriticSamplingConfig, ctx) -> dict[str, str]:
    """Models and a critic given as paths, by digest (a retrained one makes the box stale)."""
    from ..evaluation.models_stage import model_digest

    out = {}
    if cfg.critic not in ("best", "last"):
        out["critic_path"] = model_digest(str(Path(cfg.critic).expanduser()))
    for key, spec in (("model", cfg.model), ("repair", cfg.repair)):
        if spec not in RunDir.MODELS + ("none", "self", "run") and Path(spec).is_dir():
            out[key] = model_digest(spec)
    return out


def run(problems, run: RunDir, cfg: CriticSamplingConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): critic sampling on the held-out problems of
    ``cfg`` (never the run's training problems)."""
    return critic_sample(run, cfg, ctx.execution, train_ids=ctx.train_ids, echo=ctx.echo,
                         progress=cfg.progress and ctx.progress)


# -- the procedure ------------------------------------------------------------------------------

def load_problems(cfg: CriticSamplingConfig, train_ids: Collection[str] = ()) -> list:
    from ..problems.problems_config import ProblemsConfig

    problems = list(ProblemsConfig(source=cfg.source, split=cfg.split, start=cfg.start, end=cfg.end).load())
    if not problems:
        raise CriticSamplingError(f"critic_sample: no problems in {cfg.source} split {cfg.split} "
                                  f"[{cfg.start}:{cfg.end}]")
    seen = sorted({str(p.id) for p in problems} & set(train_ids))
    if seen:
        raise CriticSamplingError(f"critic_sample: {len(seen)} of its {len(problems)} problems "
                                  f"({', '.join(seen[:3])}) are problems this run trained on: choose "
                                  "held-out problems (critic_sample.source / split / start / end)")
    return problems


class Models:
    """The actor, the critic and the repair model (None, the actor itself, or another model)."""

    def __init__(self, run: RunDir, cfg: CriticSamplingConfig, echo: Callable[[str], None] = print):
        from ..critic.critic_trainer import resolve_checkpoint
        from ..critic.model import CriticModel
        from ..models import load_model

        self.actor_spec = run.model(cfg.model)
        self.actor = load_model(self.actor_spec, device=cfg.device, dtype=cfg.dtype, threads=cfg.threads)
        self.critic_path = resolve_checkpoint(run.root, cfg.critic)
        self.critic = CriticModel.from_pretrained(self.critic_path, device=cfg.device)
        self.critic.eval()
        if self.critic.num_classes != 2:
            echo(f"      critic_sample: {self.critic_path} is a {self.critic.num_classes}-class critic: its "
                 "P(passed) steers refinement and ranking (CodeRL uses a binary critic: train one with "
                 "critic.num_classes: 2)")
        self.repair_spec: str | None = None
        self.repair = None
        if cfg.repair == "self":
            self.repair_spec, self.repair = self.actor_spec, self.actor
        elif cfg.repair != "none":
            spec = str(run.box("repair")) if cfg.repair == "run" else cfg.repair
            if cfg.repair == "run" and not Path(spec).is_dir():
                raise CriticSamplingError(f"critic_sample.repair: run means {spec}, which does not exist "
                                          "(run coderl train-repair first, or set repair: self / none)")
            self.repair_spec = spec
            self.repair = load_model(spec, device=cfg.device, dtype=cfg.dtype, threads=cfg.threads)
            check_same_tokenizer(self.actor, self.repair, self.actor_spec, spec)


def check_same_tokenizer(a, b, a_spec: str, b_spec: str) -> None:
    """A repair model must share the actor's tokenizer: its programs are ranked beside the
    actor's by log-probability, and train-repair tokenized its pairs with it."""
    va, vb = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    if va != vb:
        raise CriticSamplingError(f"critic_sample.repair: {b_spec} has another tokenizer ({len(vb)} tokens) "
                                  f"than the actor {a_spec} ({len(va)}): a repair model is the actor "
                                  "fine-tuned by coderl train-repair (or repair: self)")


class State:
    """What the finished rounds left: samples, example verdicts, critic values (per problem)."""

    def __init__(self, problems: list):
        self.problems = {str(p.id): p for p in problems}
        self.samples: dict[str, list[Sample]] = {pid: [] for pid in self.problems}
        self.example: dict[tuple[str, int], dict | None] = {}
        self.scores: dict[tuple[str, int], tuple[float, Any, Any]] = {}  # p_pass, token q, offsets
        self.parent_uses: Counter = Counter()
        self.rounds: list[dict] = []

    def add(self, s: Sample, example: dict | None) -> None:
        self.samples[s.problem_id].append(s)
        self.example[s.key] = example
        parent = s.meta.get("parent")
        if parent is not None:
            self.parent_uses[(s.problem_id, parent)] += 1

    def has_examples(self, pid: str) -> bool:
        return bool(self.problems[pid].num_example_tests)

    def passes_examples(self, key: tuple[str, int]) -> bool:
        r = self.example.get(key)
        return bool(r) and r["outcome"] == "passed"


def critic_sample(run: RunDir, cfg: CriticSamplingConfig, exec_cfg, *, train_ids: Collection[str] = (),
                  echo: Callable[[str], None] = print, progress: bool = True,
                  executor: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run the procedure of the module docstring in ``run.critic_sampling``; returns the summary
    (also ``report.json``). ``executor(exec_cfg)`` makes the sandbox (tests pass a recording one)."""
    from ..distributed import make_executor

    problems = load_problems(cfg, train_ids)
    box = RunDir(run.critic_sampling)
    box.mkdir()
    models = Models(run, cfg, echo)
    state = State(problems)
    t0 = time.monotonic()
    with (executor or make_executor)(exec_cfg) as ex:
        _replay(box, state, models, cfg)
        if state.rounds:
            echo(f"      critic_sample: resuming after round {len(state.rounds) - 1}")
        for rnd in range(len(state.rounds), cfg.rounds + 1):
            info = _round(rnd, box, state, models, cfg, ex, progress)
            echo(f"      round {rnd}: {info['programs']} programs ({info['by_origin']}), "
                 f"{info['example_passed']} pass the example tests, {info['seconds']:.0f}s")
        subs = submission.choose(state, cfg.submit)
        submission.write(box.root / submission.FILE, subs)
    # the hidden tests: only now, after the submission is written
    from ..execution.stage import execute

    execute(problems, box.root / SAMPLES, box.results, exec_cfg, progress=progress)
    from ..records import join

    report = submission.report(problems, state, subs, [r for _, r in join(box.root / SAMPLES, box.results)], cfg,
                               seconds=time.monotonic() - t0, models=models)
    atomic_write_text(box.report_json, json.dumps(report, indent=1) + "\n")
    atomic_write_text(box.report_md, submission.render(report))
    return {"complete": True, **report["summary"]}


def _round(rnd: int, box: RunDir, state: State, models: Models, cfg: CriticSamplingConfig, ex,
           progress: bool) -> dict[str, Any]:
    t = time.monotonic()
    plan = plan_round(rnd, state, models, cfg)
    new = _generate(plan, models, cfg, rnd)
    verdicts = _run_examples(new, state, ex)
    _score(new, state, models, cfg)
    with sample_writer(box.root / SAMPLES) as w:
        w.write_many([s.to_dict() for s in new])
    with result_writer(box.root / EXAMPLES) as w:
        w.write_many([v for v in verdicts if v is not None])
    for s, v in zip(new, verdicts):
        state.add(s, v)
    info = {"round": rnd, "programs": len(new),
            "by_origin": dict(Counter(s.origin for s in new)),
            "tokens": sum(s.num_tokens for s in new),
            "example_passed": sum(1 for v in verdicts if v and v["outcome"] == "passed"),
            "seconds": round(time.monotonic() - t, 2)}
    state.rounds.append(info)
    with open(box.root / ROUNDS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(info) + "\n")
    return info


def _replay(box: RunDir, state: State, models: Models, cfg: CriticSamplingConfig) -> None:
    """Load the finished rounds; drop records of an unfinished one (it is drawn again)."""
    path = box.root / ROUNDS
    done = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            done.append(json.loads(line))
        except ValueError:  # a line torn by a kill: that round is drawn again
            break
    samples = read_samples(box.root / SAMPLES, state.problems, resume=True) if (box.root / SAMPLES).is_file() else []
    examples = {(r["problem_id"], r["index"]): r for r in (read_results(box.root / EXAMPLES, state.problems, resume=True)
                                                           if (box.root / EXAMPLES).is_file() else [])}
    keep = [s for s in samples if s.meta.get("round", 0) < len(done)]
    keys = {s.key for s in keep}
    if len(keep) < len(samples) or set(examples) - keys or len(done) < len(path.read_text().splitlines() if path.is_file() else []):
        atomic_write_text(path, "".join(json.dumps(d) + "\n" for d in done))
        atomic_write_text(box.root / SAMPLES, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in keep))
        atomic_write_text(box.root / EXAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                      for k, r in examples.items() if k in keys))
    for rnd in range(len(done)):
        new = [s for s in keep if s.meta.get("round", 0) == rnd]
        _score(new, state, models, cfg)
        for s in new:
            state.add(s, examples.get(s.key))
        state.rounds.append(done[rnd])


# -- one round ------------------------------------------------------------------------------------

def plan_round(rnd: int, state: State, models: Models, cfg: CriticSamplingConfig) -> list[dict[str, Any]]:
    """The round's requests: ``{problem, index, op (sample|refine|repair), parent, prefix,
    feedback}`` per new program (see the module docstring)."""
    plan = []
    for pid, problem in state.problems.items():
        have = state.samples[pid]
        left = cfg.budget - len(have)
        if rnd == 0:
            slots = min(cfg.first, left) if cfg.rounds else left
        else:
            slots = math.ceil(left / (cfg.rounds - rnd + 1)) if left > 0 else 0
            if cfg.enough and sum(state.passes_examples(s.key) for s in have) >= cfg.enough:
                slots = 0
        parents = _parents(pid, state, models, cfg) if rnd > 0 and slots > 0 else []
        for i in range(slots):
            index = len(have) + i
            if not parents:
                plan.append({"problem": problem, "index": index, "op": "sample", "parent": None})
                continue
            op, parent, extra = parents[i % len(parents)]
            plan.append({"problem": problem, "index": index, "op": op, "parent": parent.index, **extra})
    return plan


def _parents(pid: str, state: State, models: Models, cfg: CriticSamplingConfig) -> list[tuple[str, Sample, dict]]:
    """Refine and repair parents of a problem, interleaved, each list by (times used as a parent,
    -P(passed) by the critic)."""
    examples = state.has_examples(pid)
    refinable = cfg.refine and prompt_fits(state.problems[pid], models, cfg)
    order = sorted(state.samples[pid], key=lambda s: (state.parent_uses[s.key], -state.scores[s.key][0], s.index))
    refine, repair = [], []
    for s in order:
        passed = state.passes_examples(s.key)
        if refinable and (passed or cfg.refine_failed or not examples):
            prefix = refine_prefix(s, state, models, cfg)
            if prefix:
                refine.append(("refine", s, {"prefix": prefix}))
        if models.repair is not None and examples and not passed:
            repair.append(("repair", s, {"feedback": feedback(s.program, state.example.get(s.key), state.problems[pid])}))
    out = []
    for i in range(max(len(refine), len(repair))):
        out += refine[i:i + 1] + repair[i:i + 1]
    return out


def prompt_fits(problem, models: Models, cfg: CriticSamplingConfig) -> bool:
    """Whether the actor's prompt for ``problem`` fits ``max_prompt_tokens`` (a prompt is never
    cut before a prefix: a problem whose prompt does not fit is not refined)."""
    if models.actor.is_encoder_decoder:
        return True
    prompt = _prompt(problem, models, cfg)
    return len(models.actor.tokenizer(prompt.text, add_special_tokens=False).input_ids) <= cfg.max_prompt_tokens


def _prompt(problem, models: Models, cfg: CriticSamplingConfig):
    from ..models import build_prompt

    return build_prompt(problem, models.actor.tokenizer, cfg.prompt_style, models.actor.is_encoder_decoder)


def refine_prefix(s: Sample, state: State, models: Models, cfg: CriticSamplingConfig) -> str | None:
    """The start of ``s.raw`` the actor continues (:mod:`.prefixes`); None when there is none.
    Only tokens of the part of the program the actor wrote can end it (extraction may put the
    prompt's own code, e.g. HumanEval's signature and docstring, in front of it)."""
    _, q_pass, offsets = state.scores[s.key]
    prompt = _prompt(state.problems[s.problem_id], models, cfg)
    end = best_cut(s.program, offsets, q_pass, cfg.cut, start=written_from(s.program, s.raw, prompt.prefix))
    if end is None:
        return None
    return raw_prefix(s.raw, s.program, end, prompt.prefix, token_ends(models.actor.tokenizer, s.raw))


def _generate(plan: list[dict], models: Models, cfg: CriticSamplingConfig, rnd: int) -> list[Sample]:
    from ..generation.core import GenRequest, generate_samples
    from ..generation.generation_config import GenerationConfig

    origin = {"sample": "sampled", "refine": "refined", "repair": "repaired"}
    gcfg = GenerationConfig(model=models.actor_spec, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 1_000 * rnd,
                            max_prompt_tokens=cfg.max_prompt_tokens, prompt_style=cfg.prompt_style,
                            batch_size=cfg.batch_size, progress=False)
    reqs: dict[str, list[tuple[int, Any]]] = {"actor": [], "repair": []}
    for n, p in enumerate(plan):
        meta = {"round": rnd, "op": p["op"], "parent": p["parent"]}
        r = GenRequest(p["problem"], p["index"], origin[p["op"]], prefix=p.get("prefix", ""),
                       feedback=p.get("feedback"), meta=meta)
        reqs["repair" if p["op"] == "repair" and models.repair is not models.actor else "actor"].append((n, r))
    out: list[Sample | None] = [None] * len(plan)
    for who, items in reqs.items():
        if not items:
            continue
        lm = models.actor if who == "actor" else models.repair
        for (n, _), s in zip(items, generate_samples(lm, [r for _, r in items], gcfg)):
            out[n] = s
    return out  # type: ignore[return-value]


def _run_examples(new: list[Sample], state: State, ex) -> list[dict | None]:
    """Each new program on its problem's example tests (None where a problem has none)."""
    from ..records import program_hash

    todo = [(i, s) for i, s in enumerate(new) if state.has_examples(s.problem_id)]
    results = ex.run_many([(state.problems[s.problem_id], s.program, "example") for _, s in todo])
    out: list[dict | None] = [None] * len(new)
    for (i, s), r in zip(todo, results):
        d = r.to_dict()
        d.update(index=s.index, origin=s.origin, program_hash=program_hash(s.program))
        out[i] = d
    return out


def _score(new: list[Sample], state: State, models: Models, cfg: CriticSamplingConfig) -> None:
    """The critic's P(passed) of each new program and of each of its tokens."""
    import numpy as np

    critic = models.critic
    encs = [critic.encode(critic.context(state.problems[s.problem_id]), s.program) for s in new]
    scored = critic.score(encs, batch_size=cfg.critic_batch_size) if encs else []
    pc = critic.pass_class
    for s, e, (probs, tok) in zip(new, encs, scored):
        state.scores[s.key] = (float(probs[pc]), tok[:, pc].numpy(),
                               np.array(e.offsets, dtype=np.int64).reshape(-1, 2))
