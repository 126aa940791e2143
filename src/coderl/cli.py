"""`coderl <verb>`: one thin function per verb; the work lives in the stage modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CodeRL: actor, critic, execution rewards and critic sampling, offline.")
problems_app = typer.Typer(no_args_is_help=True, help="Inspect problem sets (APPS, MBPP, HumanEval, JSONL).")
app.add_typer(problems_app, name="problems")
# piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

BUNDLED = ("mbpp", "humaneval", "apps")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load_problem_set(spec: str, path: Optional[Path] = None, split: Optional[str] = None,
                     difficulty: Optional[list[str]] = None, start: Optional[int] = None,
                     end: Optional[int] = None, skip_invalid: bool = False, heldout: bool = False):
    """Shared by the `problems` verbs: errors become one clear line, skips are listed."""
    from .problems import ProblemError, load_problems

    try:
        problems = load_problems(spec, path=path, split=split, difficulties=difficulty, start=start,
                                 end=end, skip_invalid=skip_invalid, heldout=heldout)
    except (ProblemError, ValueError) as e:
        hint = not skip_invalid and isinstance(e, ProblemError) and e.problem_id is not None
        fail(str(e) + ("  (use --skip-invalid to skip invalid problems)" if hint else ""))
    for e in problems.skipped:
        err_console.print(f"[yellow]skipped[/] {e}", highlight=False)
    return problems


# -- options shared by the problem verbs ---------------------------------------------------------
PathOpt = typer.Option(None, "--path", help="Data file or folder (APPS folder/JSONL, MBPP/HumanEval file).")
SplitOpt = typer.Option(None, "--split", help="Split: train/test/validation/prompt.")
DiffOpt = typer.Option(None, "--difficulty", help="Keep these difficulties (repeatable).")
StartOpt = typer.Option(None, "--start", help="First problem index (as in CodeRL's scripts).")
EndOpt = typer.Option(None, "--end", help="One past the last problem index.")
SkipOpt = typer.Option(False, "--skip-invalid", help="Skip invalid problems and list them instead of failing.")
HeldoutOpt = typer.Option(False, "--heldout", help="MBPP: show only the first assert as the example test.")


@problems_app.command("list")
def problems_list(spec: str = typer.Argument(..., help="mbpp | humaneval | apps | a path"),
                  path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                  difficulty: Optional[list[str]] = DiffOpt, start: Optional[int] = StartOpt,
                  end: Optional[int] = EndOpt, skip_invalid: bool = SkipOpt,
                  heldout: bool = HeldoutOpt) -> None:
    """One line per problem: id, split, difficulty, kind, tests, example tests, question."""
    problems = load_problem_set(spec, path, split, difficulty, start, end, skip_invalid, heldout)
    table = Table("id", "split", "difficulty", "kind", "tests", "examples", "question")
    table.columns[0].no_wrap = True
    for p in problems:
        q = " ".join(p.question.split())
        table.add_row(p.id, p.split, p.difficulty, p.kind, str(p.num_tests), str(p.num_example_tests),
                      q[:60] + ("…" if len(q) > 60 else ""))
    console.print(table)


@problems_app.command("show")
def problems_show(spec: str = typer.Argument(..., help="mbpp | humaneval | apps | a path"),
                  problem_id: str = typer.Argument(..., help="Problem id, e.g. mbpp/11, HumanEval/0, apps/train/0001"),
                  path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                  heldout: bool = HeldoutOpt,
                  as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON.")) -> None:
    """Print one problem: question, tests, example tests, first solution."""
    problems = load_problem_set(spec, path, split, heldout=heldout)
    match = [p for p in problems if p.id == problem_id]
    if not match:
        fail(f"{path or spec}: no problem with id {problem_id!r} (e.g. {problems[0].id!r})")
    p = match[0]
    if as_json:
        console.print_json(p.to_json())
        return
    console.rule(f"{p.id}  [{p.source}/{p.split}, {p.difficulty}, {p.kind}]")
    console.print(p.question, highlight=False, markup=False)
    if p.starter_code:
        console.rule("starter code")
        console.print(p.starter_code, highlight=False, markup=False)
    console.rule(f"example tests ({p.num_example_tests})")
    console.print(json.dumps(p.example_tests, indent=1)[:2000], highlight=False, markup=False)
    console.rule(f"hidden tests ({p.num_tests})")
    console.print(json.dumps(p.tests, indent=1)[:2000], highlight=False, markup=False)
    if p.solutions:
        console.rule(f"solution 1 of {len(p.solutions)}")
        console.print(p.solutions[0], highlight=False, markup=False)


@problems_app.command("stats")
def problems_stats(specs: Optional[list[str]] = typer.Argument(None, help="Sets to count (default: all bundled)"),
                   path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                   difficulty: Optional[list[str]] = DiffOpt, skip_invalid: bool = SkipOpt,
                   as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON.")) -> None:
    """Counts by source, split, difficulty and kind; tests and example tests per problem."""
    from .problems.stats import problem_stats

    problems = []
    for spec in specs or BUNDLED:
        problems += load_problem_set(spec, path, split, difficulty, skip_invalid=skip_invalid)
    rows = problem_stats(problems)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in rows]))
        return
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
    table = Table("source", "split", "problems", "kinds", "difficulties", "tests/problem",
                  "example tests/problem", "with examples", title="Problem sets")
    for r in rows:
        style = "bold" if r.split == "all" else None
        table.add_row(r.source, r.split, str(r.problems), fmt(r.kinds), fmt(r.difficulties),
                      f"{r.tests_per_problem:.2f}", f"{r.examples_per_problem:.2f}",
                      f"{r.with_examples}/{r.problems}", style=style)
    console.print(table)


# -- the stage verbs: options generated from the stages' config dataclasses ----------------------

def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .io import RecordError
    from .models import ModelError
    from .problems import ProblemError
    from .training.data import TrainingError  # bad training input, NaN loss, foreign checkpoints

    return (ConfigError, ProblemError, RecordError, ModelError, TrainingError, FileNotFoundError,
            IsADirectoryError, NotADirectoryError, ValueError)


def _problems_cfg(given: dict, recorded_from: Optional[Path] = None):
    """The problem selection: what the user typed, else the one recorded beside ``recorded_from``
    (the samples of a run), else an error."""
    from .config import from_dict
    from .problems.problems_config import ProblemsConfig
    from .rundir import recorded_selection

    if given:
        return from_dict(ProblemsConfig, given, "problem options")
    if recorded_from is not None:
        sel = recorded_selection(recorded_from)
        if sel is not None:
            err_console.print(f"problems: the selection recorded beside {recorded_from} "
                              f"({_describe_selection(sel)})", highlight=False)
            return from_dict(ProblemsConfig, sel, f"{recorded_from}.meta.json: selection")
    fail("--problems is required" + (f" (no selection is recorded beside {recorded_from})"
                                     if recorded_from is not None else ""))


def _describe_selection(sel: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items() if v not in (None, False, []))


def _load(pc):
    problems = pc.load()
    for e in problems.skipped:
        err_console.print(f"[yellow]skipped[/] {e}", highlight=False)
    return problems


from .cliopts import verb  # noqa: E402
from .evaluation.eval_config import EvalConfig  # noqa: E402
from .execution.pool import ExecConfig  # noqa: E402
from .generation.generation_config import GenerationConfig  # noqa: E402
from .problems.problems_config import ProblemsConfig  # noqa: E402


@verb(app, "generate", {"problems": ProblemsConfig, "generation": GenerationConfig})
def generate_cmd(out: Path = typer.Option(..., "--out", help="Samples JSONL (appended; a rerun resumes)."),
                 *, given: dict) -> None:
    """Sample programs from a model: num_seqs per problem plus a greedy one (resumable)."""
    import dataclasses

    from .config import from_dict
    from .generation import generate

    try:
        pc = _problems_cfg(given["problems"])
        cfg = from_dict(GenerationConfig, given["generation"], "generation options")
        summary = generate(list(_load(pc)), out, cfg, selection=dataclasses.asdict(pc),
                           fresh_hint=f"delete {out} or choose another --out")
    except _user_errors() as e:
        fail(str(e))
    console.print_json(json.dumps(summary))


@verb(app, "execute", {"problems": ProblemsConfig, "execution": ExecConfig})
def execute_cmd(samples: Path = typer.Option(..., "--samples", help="Samples JSONL (problem_id, index, program)."),
                out: Path = typer.Option(..., "--out", help="Results JSONL (appended; a rerun resumes)."),
                *, given: dict) -> None:
    """Run sampled programs against their problems' tests: one Result per sample (resumable).
    Without problem options, the selection recorded beside the samples is used."""
    from .execution.stage import execute, print_summary
    from .pipeline import _exec_from_dict, exec_fingerprint
    from .rundir import check_resume, write_meta

    try:
        pc = _problems_cfg(given["problems"], samples)
        cfg = _exec_from_dict(given["execution"], "execution options")
        problems = list(_load(pc))
        fp = exec_fingerprint(cfg)
        check_resume(out, "execute", fp, fresh_hint=f"delete {out} or choose another --out")
        write_meta(out, "execute", fp, complete=False)
        summary = execute(problems, samples, out, cfg, progress=True)
        write_meta(out, "execute", fp, complete=True)
    except KeyboardInterrupt:
        fail(f"interrupted: the results written so far are kept in {out}; rerun to resume", code=130)
    except _user_errors() as e:
        fail(str(e))
    print_summary(summary, console)


@verb(app, "evaluate", {"problems": ProblemsConfig, "evaluation": EvalConfig})
def evaluate_cmd(results: Path = typer.Option(..., "--results", help="Results JSONL from `coderl execute`."),
                 out_dir: Path = typer.Option(..., "--out-dir", help="Where report.md/json and plots go."),
                 samples: Optional[Path] = typer.Option(None, "--samples", help="Samples JSONL (origins; "
                                                        "its recorded problem selection)."),
                 compare: Optional[Path] = typer.Option(None, "--compare", help="Another run (its directory "
                                                        "or report.json): every metric's difference with a "
                                                        "paired-bootstrap 95% interval."),
                 *, given: dict) -> None:
    """pass@k, n@k with example-test filtering, hack rate, breakdowns and plots: report.md / report.json."""
    from .config import from_dict
    from .evaluation import evaluate, pass_table
    from .evaluation.stage import compare_reports, compare_table

    try:
        if out_dir.exists() and not out_dir.is_dir():
            fail(f"--out-dir {out_dir}: is a file, not a directory")
        if samples is not None and not samples.is_file():
            fail(f"--samples {samples}: no such file")
        pc = _problems_cfg(given["problems"], samples)
        cfg = from_dict(EvalConfig, given["evaluation"], "evaluation options")
        report = evaluate(list(_load(pc)), results, out_dir, cfg, samples_path=samples)
        if compare is not None:
            comparison = compare_reports(compare, report, out_dir, cfg)
    except _user_errors() as e:
        fail(str(e))
    for w in report.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(pass_table(report), highlight=False)
    if compare is not None:
        console.print("")
        console.print(compare_table(comparison), highlight=False)
    console.print(f"report: {report['report_path']}", highlight=False)


from .critic.critic_config import CriticConfig  # noqa: E402
from .critic.score_config import ScoreConfig  # noqa: E402


def _guarded(action, interrupted: str = "rerun the same command to resume from the last checkpoint"):
    """Run a stage verb's work: Ctrl-C and bad input become one line each (exit 130 / 2)."""
    try:
        return action()
    except KeyboardInterrupt:
        fail(f"interrupted: {interrupted}", code=130)
    except _user_errors() as e:
        fail(str(e))


def _run_dir_for(run_dir: Optional[Path], samples: Path) -> Path:
    return run_dir if run_dir is not None else samples.parent


@verb(app, "train-critic", {"problems": ProblemsConfig, "critic": CriticConfig})
def train_critic_cmd(samples: Path = typer.Option(..., "--samples", help="Samples JSONL of the training problems."),
                     results: Path = typer.Option(..., "--results", help="Their results JSONL (coderl execute)."),
                     run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where critic/ goes "
                                                            "(default: the samples' directory)."),
                     fresh: bool = typer.Option(False, "--fresh", help="Delete critic/ and train again."),
                     *, given: dict) -> None:
    """Train the critic (problem + program -> test outcome, a value per program token); held-out
    metrics and baselines in <run-dir>/critic/metrics.json (resumable)."""
    from .config import from_dict
    from .critic import train_critic

    def work():
        pc = _problems_cfg(given["problems"], samples)
        cfg = from_dict(CriticConfig, given["critic"], "critic options")
        return train_critic(list(_load(pc)), _run_dir_for(run_dir, samples), cfg, samples_path=samples,
                            results_path=results, fresh=fresh, echo=lambda m: console.print(m, highlight=False))

    summary = _guarded(work)
    console.print_json(json.dumps({k: summary.get(k) for k in ("validation", "baselines", "bootstrap_auroc_diff",
                                                             "train_seconds", "peak_rss_mb", "checkpoint")},
                                  default=str))


@verb(app, "critic-score", {"problems": ProblemsConfig, "critic_score": ScoreConfig})
def critic_score_cmd(samples: Path = typer.Option(..., "--samples", help="Samples JSONL to score."),
                     results: Optional[Path] = typer.Option(None, "--results", help="Their results (for "
                                                            "q̂ of the actual outcome; optional)."),
                     run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="The run whose critic/ "
                                                            "is meant by --checkpoint best|last (default: "
                                                            "the samples' directory)."),
                     out: Optional[Path] = typer.Option(None, "--out", help="Scores file (default: "
                                                        "<run-dir>/critic_scores.npz)."),
                     fresh: bool = typer.Option(False, "--fresh", help="Score everything again."),
                     *, given: dict) -> None:
    """Per sample: class probabilities and per-token values q̂ (of the actual outcome, and of
    passed), float16 in an .npz with the tokens' character offsets (resumable)."""
    from .config import from_dict
    from .critic import score

    def work():
        pc = _problems_cfg(given["problems"], samples)
        cfg = from_dict(ScoreConfig, given["critic_score"], "critic-score options")
        return score(list(_load(pc)), _run_dir_for(run_dir, samples), cfg, samples_path=samples,
                     results_path=results, out_path=out, fresh=fresh, echo=lambda m: console.print(m, highlight=False))

    summary = _guarded(work, "rerun the same command to resume")
    console.print_json(json.dumps(summary, default=str))


from .training.rl_config import RLConfig  # noqa: E402
from .training.sft_config import SFTConfig  # noqa: E402


@verb(app, "train-actor", {"problems": ProblemsConfig, "sft": SFTConfig})
def train_actor_cmd(run_dir: Path = typer.Option(..., "--run-dir", help="The run: the model goes to <run-dir>/sft/."),
                    fresh: bool = typer.Option(False, "--fresh", help="Delete <run-dir>/sft/ and train again."),
                    *, given: dict) -> None:
    """SFT warm-up: fine-tune the actor on the gold programs of the problems, in the prompt format
    generation uses (resumable; `coderl generate --model <run-dir>/sft` samples from it)."""
    from .config import from_dict
    from .training import train_sft

    def work():
        pc = _problems_cfg(given["problems"])
        cfg = from_dict(SFTConfig, given["sft"], "sft options")
        return train_sft(list(_load(pc)), run_dir, cfg, fresh=fresh, echo=lambda m: console.print(m, highlight=False))

    summary = _guarded(work)
    console.print_json(json.dumps(summary, default=str))


@verb(app, "train-rl", {"problems": ProblemsConfig, "rl": RLConfig})
def train_rl_cmd(samples: Path = typer.Option(..., "--samples", help="Samples of the training problems "
                                               "(by the model RL starts from)."),
                 results: Path = typer.Option(..., "--results", help="Their results (coderl execute)."),
                 scores: Optional[Path] = typer.Option(None, "--scores", help="Critic scores (coderl "
                                                       "critic-score); without them q̂ = 1."),
                 run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="The run: the model goes "
                                                        "to <run-dir>/rl/ (default: the samples' directory)."),
                 fresh: bool = typer.Option(False, "--fresh", help="Delete <run-dir>/rl/ and train again."),
                 *, given: dict) -> None:
    """CodeRL's offline RL: -(r(W^s) - r(W^b)) q̂(w_t) log p(w_t), alternating with cross-entropy
    steps on gold programs (resumable)."""
    from .config import from_dict
    from .training import train_rl

    def work():
        pc = _problems_cfg(given["problems"], samples)
        cfg = from_dict(RLConfig, given["rl"], "rl options")
        return train_rl(list(_load(pc)), _run_dir_for(run_dir, samples), cfg, samples_path=samples,
                        results_path=results, scores_path=scores, fresh=fresh,
                        echo=lambda m: console.print(m, highlight=False))

    summary = _guarded(work)
    console.print_json(json.dumps(summary, default=str))


from .evaluation.models_config import ModelsEvalConfig  # noqa: E402


@verb(app, "compare-models", {"compare": ModelsEvalConfig, "execution": ExecConfig})
def compare_models_cmd(run_dir: Path = typer.Option(..., "--run-dir", help="The run whose sft/ and rl/ "
                                                    "are meant by the labels sft and rl; compare.md goes there."),
                       base_model: str = typer.Option("default", "--base-model", help="The model the "
                                                      "label base means (the one the run started from)."),
                       *, given: dict) -> None:
    """Base vs SFT vs RL (or any models) side by side on held-out problems: greedy pass@1 (and
    pass@k), hack rate and outcome mix, with paired-bootstrap intervals (resumable)."""
    from .config import from_dict
    from .evaluation.models_stage import compare_models

    def work():
        cfg = from_dict(ModelsEvalConfig, given["compare"], "compare-models options")
        ex = from_dict(ExecConfig, given["execution"], "compare-models options")
        return compare_models(run_dir, cfg, ex, base_model=base_model,
                              echo=lambda m: console.print(m, highlight=False))

    _guarded(work, "rerun the same command to resume")


@app.command("pipeline")
def pipeline_cmd(config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/mbpp_smollm2_eval_cpu.yaml"),
                 set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: section.key=value (YAML value)."),
                 start: Optional[str] = typer.Option(None, "--from", help="First stage to run (the stages "
                                                     "before it must be complete)."),
                 until: Optional[str] = typer.Option(None, "--until", help="Last stage to run."),
                 fresh: bool = typer.Option(False, "--fresh", help="Start the selected stages again: delete "
                                            "their outputs first.")) -> None:
    """Run the stages of a recipe (generate -> execute -> evaluate) in runs/<name>/ (resumable)."""
    from .pipeline import load_config, parse_overrides, run_pipeline

    try:
        cfg = load_config(config, parse_overrides(set_ or []))
        run_pipeline(cfg, echo=lambda s: console.print(s, highlight=False), start=start, until=until,
                     fresh=fresh)
    except KeyboardInterrupt:
        fail("interrupted: what the stages wrote is kept; rerun the same command to resume", code=130)
    except _user_errors() as e:
        fail(str(e))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
