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
                     end: Optional[int] = None, skip_invalid: bool = False):
    """Shared by every verb that takes problems: errors become one clear line, skips are listed."""
    from .problems import ProblemError, load_problems

    try:
        problems = load_problems(spec, path=path, split=split, difficulties=difficulty, start=start,
                                 end=end, skip_invalid=skip_invalid)
    except (ProblemError, ValueError) as e:
        fail(str(e) + ("" if skip_invalid else "  (use --skip-invalid to skip invalid problems)"))
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


@problems_app.command("list")
def problems_list(spec: str = typer.Argument(..., help="mbpp | humaneval | apps | a path"),
                  path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                  difficulty: Optional[list[str]] = DiffOpt, start: Optional[int] = StartOpt,
                  end: Optional[int] = EndOpt, skip_invalid: bool = SkipOpt) -> None:
    """One line per problem: id, split, difficulty, kind, tests, example tests, question."""
    problems = load_problem_set(spec, path, split, difficulty, start, end, skip_invalid)
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
                  as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON.")) -> None:
    """Print one problem: question, tests, example tests, first solution."""
    problems = load_problem_set(spec, path, split)
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


@app.command("execute")
def execute_cmd(problems_spec: str = typer.Option(..., "--problems", help="mbpp | humaneval | apps | a path"),
                samples: Path = typer.Option(..., "--samples", help="Samples JSONL (problem_id, index, program)."),
                out: Path = typer.Option(..., "--out", help="Results JSONL (appended; a rerun resumes)."),
                path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                workers: int = typer.Option(0, "--workers", help="Warm workers (0: two per core)."),
                timeout: float = typer.Option(4.0, "--timeout", help="Seconds per test case."),
                memory_mb: int = typer.Option(2048, "--memory-mb", help="Address-space limit per program."),
                cache: Optional[Path] = typer.Option(None, "--cache", help="SQLite verdict cache file."),
                full: bool = typer.Option(False, "--full", help="Run every test (no early exit)."),
                isolation: str = typer.Option("auto", "--isolation", help="auto | bwrap | none")) -> None:
    """Run sampled programs against their problems' tests: one Result per sample (resumable)."""
    from .execution import ExecConfig, Limits
    from .execution.stage import execute, print_summary
    from .io import RecordError

    problems = load_problem_set(problems_spec, path, split)
    cfg = ExecConfig(workers=workers, timeout=timeout, limits=Limits(memory_mb=memory_mb), isolation=isolation,
                     cache_path=str(cache) if cache else None, early_exit=not full)
    try:
        summary = execute(list(problems), samples, out, cfg, progress=True)
    except (RecordError, FileNotFoundError) as e:
        fail(str(e))
    print_summary(summary, console)


@app.command("generate")
def generate_cmd(problems_spec: str = typer.Option(..., "--problems", help="mbpp | humaneval | apps | a path"),
                 out: Path = typer.Option(..., "--out", help="Samples JSONL (appended; a rerun resumes)."),
                 path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                 difficulty: Optional[list[str]] = DiffOpt, start: Optional[int] = StartOpt,
                 end: Optional[int] = EndOpt,
                 model: str = typer.Option("default", "--model", help="default | an HF directory | a .gguf file"),
                 num_seqs: int = typer.Option(10, "--num-seqs", help="Sampled programs per problem."),
                 greedy: bool = typer.Option(True, "--greedy/--no-greedy", help="One extra greedy program per problem."),
                 batch_size: int = typer.Option(64, "--batch-size", help="Sequences decoded together."),
                 temperature: float = typer.Option(0.8, "--temperature"),
                 top_p: float = typer.Option(0.95, "--top-p"),
                 max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
                 seed: int = typer.Option(0, "--seed"),
                 prompt_style: str = typer.Option("auto", "--prompt-style", help="auto | chat | plain"),
                 threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
                 device: str = typer.Option("cpu", "--device")) -> None:
    """Sample programs from a model: num_seqs per problem plus a greedy one (resumable)."""
    from .generation import GenerationConfig, generate
    from .io import RecordError
    from .models import ModelError

    problems = load_problem_set(problems_spec, path, split, difficulty, start, end)
    cfg = GenerationConfig(model=model, num_seqs=num_seqs, greedy=greedy, batch_size=batch_size,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                           prompt_style=prompt_style, threads=threads, device=device)
    try:
        summary = generate(list(problems), out, cfg)
    except (ModelError, RecordError, ValueError) as e:
        fail(str(e))
    console.print_json(json.dumps(summary))


@app.command("evaluate")
def evaluate_cmd(problems_spec: str = typer.Option(..., "--problems", help="mbpp | humaneval | apps | a path"),
                 results: Path = typer.Option(..., "--results", help="Results JSONL from `coderl execute`."),
                 out_dir: Path = typer.Option(..., "--out-dir", help="Where report.md/json and plots go."),
                 samples: Optional[Path] = typer.Option(None, "--samples", help="Samples JSONL (origins)."),
                 path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                 difficulty: Optional[list[str]] = DiffOpt, start: Optional[int] = StartOpt,
                 end: Optional[int] = EndOpt,
                 k: Optional[list[int]] = typer.Option(None, "--k", help="pass@k values (repeatable)."),
                 n_at_k: Optional[list[str]] = typer.Option(None, "--n-at-k", help="n@k like 1@10 (repeatable)."),
                 plots: bool = typer.Option(True, "--plots/--no-plots")) -> None:
    """pass@k, n@k with example-test filtering, breakdowns and plots: report.md / report.json."""
    from .evaluation import EvalConfig, evaluate, pass_table
    from .io import RecordError

    problems = load_problem_set(problems_spec, path, split, difficulty, start, end)
    cfg = EvalConfig(plots=plots)
    if k:
        cfg.ks = list(k)
    if n_at_k:
        cfg.n_at_k = list(n_at_k)
    try:
        report = evaluate(list(problems), results, out_dir, cfg, samples_path=samples)
    except (RecordError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    console.print(pass_table(report), highlight=False)
    console.print(f"report: {report['report_path']}", highlight=False)


@app.command("pipeline")
def pipeline_cmd(config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/mbpp_smollm2_eval_cpu.yaml"),
                 set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: section.key=value (YAML value).")) -> None:
    """Run the whole loop of a recipe (generate -> execute -> evaluate) in runs/<name>/ (resumable)."""
    import yaml

    from .io import RecordError
    from .models import ModelError
    from .pipeline import ConfigError, load_config, run_pipeline
    from .problems import ProblemError

    overrides = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected section.key=value")
        overrides[key] = yaml.safe_load(value)
    try:
        run_pipeline(load_config(config, overrides), echo=lambda s: console.print(s, highlight=False))
    except (ConfigError, ModelError, ProblemError, RecordError, FileNotFoundError) as e:
        fail(str(e))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
