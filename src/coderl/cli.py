"""`coderl <verb>`: one thin function per verb; the work lives in the stage modules."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cliopts import verb
from .config import from_dict

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
    return _listed(problems)


def _listed(problems):
    """``problems``, after listing the ones ``skip_invalid`` left out."""
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
    for title, text in ((f"{p.id}  [{p.source}/{p.split}, {p.difficulty}, {p.kind}]", p.question),
                        ("starter code", p.starter_code),
                        (f"example tests ({p.num_example_tests})", json.dumps(p.example_tests, indent=1)[:2000]),
                        (f"hidden tests ({p.num_tests})", json.dumps(p.tests, indent=1)[:2000]),
                        (f"solution 1 of {len(p.solutions)}", p.solutions[0] if p.solutions else "")):
        if text:  # (no starter code or solution: no section)
            console.rule(title)
            console.print(text, highlight=False, markup=False)


@problems_app.command("stats")
def problems_stats(specs: Optional[list[str]] = typer.Argument(None, help="Sets to count (default: all bundled)"),
                   path: Optional[Path] = PathOpt, split: Optional[str] = SplitOpt,
                   difficulty: Optional[list[str]] = DiffOpt, skip_invalid: bool = SkipOpt,
                   as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON.")) -> None:
    """Counts by source, split, difficulty and kind; tests and example tests per problem."""
    from .problems.stats import problem_stats

    problems = [p for spec in specs or BUNDLED
                for p in load_problem_set(spec, path, split, difficulty, skip_invalid=skip_invalid)]
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


# -- the stage verbs: one per row of the stage table, options from the stages' config dataclasses --

def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .io import RecordError
    from .models import ModelError
    from .problems import ProblemError
    from .training.data import TrainingError  # bad training input, NaN loss, foreign checkpoints

    return (ConfigError, ProblemError, RecordError, ModelError, TrainingError, OSError, ValueError)


def _message(e: BaseException) -> str:
    """One line for a user error; an OSError names its file (a read-only or full disk, ...)."""
    if isinstance(e, (FileExistsError, NotADirectoryError)) and e.filename:
        return f"{e.filename}: is not a directory, so nothing can be written under it; choose another output"
    if isinstance(e, OSError) and e.strerror and not isinstance(e, FileNotFoundError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror} (errno {e.errno}): nothing already written was lost; free the " \
               "location or choose another output"
    return str(e)


def _guarded(action, interrupted: str = "rerun the same command to resume"):
    """Run a verb's work: Ctrl-C and bad input become one line each (exit 130 / 2)."""
    try:
        return action()
    except KeyboardInterrupt:
        fail(f"interrupted: {interrupted}", code=130)
    except _user_errors() as e:
        fail(_message(e))


def _problems_cfg(given: dict, recorded_from: Optional[Path] = None):
    """The problem selection: typed, else recorded beside ``recorded_from``, else an error."""
    from .rundir import recorded_selection

    if given:
        return from_dict(ProblemsConfig, given, "problem options")
    if recorded_from is not None and recorded_from.is_file():
        sel = recorded_selection(recorded_from)
        if sel is not None:
            shown = ", ".join(f"{k}={v}" for k, v in sel.items() if v not in (None, False, []))
            err_console.print(f"problems: the selection recorded beside {recorded_from} ({shown})", highlight=False)
            return from_dict(ProblemsConfig, sel, f"{recorded_from}.meta.json: selection")
    fail("--problems is required" + (f" (no selection is recorded beside {recorded_from})"
                                     if recorded_from is not None else ""))


def _run_dir(st, run_dir: Optional[Path], files: dict[str, Path]):
    from .rundir import RunDir

    flags = {b: f for b, f, _ in st.files}
    for box, path in files.items():
        if path.is_dir() and box not in RunDir.DIRS:
            fail(f"{flags[box]} {path}: is a directory, not a file")
        if box in st.reads and box not in st.writes and not path.exists():
            fail(f"{flags[box]} {path}: no such file")
    if run_dir is None:
        if not files:
            fail(f"{st.run_dir_flag} is required")
        run_dir = next(iter(files.values())).parent
    return RunDir(run_dir, files=files)


def _stage_verb(st) -> None:
    """Register the verb of one stage-table row (see :mod:`coderl.stage`)."""
    import inspect

    configs = {"problems": ProblemsConfig} if st.takes_problems else {}
    configs[st.section] = st.config_class()
    for sec in st.shared:
        configs[sec] = _section_class(sec)
    params = [inspect.Parameter("run_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, st.run_dir_flag, help="The run directory (default: "
                                                     "the directory of the first file given).")),
              inspect.Parameter("fresh", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--fresh", help="Delete this stage's outputs "
                                                     "and start it again."))]
    params += [inspect.Parameter(f"file_{box}", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                 default=typer.Option(None, flag, help=text)) for box, flag, text in st.files]

    def command(run_dir: Optional[Path] = None, fresh: bool = False, *, given: dict, **files) -> None:
        from .stage import StageContext, run_stage

        def work():
            run = _run_dir(st, run_dir, {k[5:]: v for k, v in files.items() if v is not None})
            problems = []
            if st.takes_problems:
                pc = _problems_cfg(given["problems"], run.samples)
                problems = list(_listed(pc.load()))
            cfg = from_dict(st.config_class(), given[st.section], f"{st.name} options")
            shared = {sec: from_dict(_section_class(sec), given[sec], f"{st.name} options") for sec in st.shared}
            base_model, train_ids = run_facts(run)
            ctx = StageContext(echo=lambda m: console.print(m, highlight=False), execution=shared.get("execution"),
                               base_model=getattr(cfg, "base_model", None) or base_model, train_ids=train_ids,
                               selection=dataclasses.asdict(pc) if st.takes_problems else None,
                               fresh_hint=f"add --fresh to the same command, or choose another {st.run_dir_flag}",
                               run_meta={"name": run.root.name})
            return run_stage(st, problems, run, cfg, ctx, redo=fresh)

        summary = _guarded(work)
        show = getattr(st.impl(), "show", _show_json)
        if summary is not None and show is not None:
            show(summary, console)

    command.__signature__ = inspect.Signature(params + [inspect.Parameter("given", inspect.Parameter.KEYWORD_ONLY)])
    command.__doc__ = st.help
    command.__name__ = st.name.replace("-", "_") + "_cmd"
    verb(app, st.name, configs)(command)


def _show_json(summary: dict, console) -> None:
    console.print_json(json.dumps({k: v for k, v in summary.items() if k != "history"}, default=str))


def _section_class(section: str) -> type:
    return BY_SECTION[section].config_class()


from .pipeline import BY_SECTION, STAGES, run_facts  # noqa: E402
from .problems.problems_config import ProblemsConfig  # noqa: E402

for _st in STAGES:
    _stage_verb(_st)


@app.command("pipeline", help=f"Run the stages of a recipe in runs/<name>/, in the order of the stage table "
             f"({' -> '.join(st.name for st in STAGES)}; those the recipe has sections for); resumable, "
             "stale stages redone.")
def pipeline_cmd(config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/mbpp_smollm2_eval_cpu.yaml"),
                 set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: section.key=value (YAML value)."),
                 start: Optional[str] = typer.Option(None, "--from", help="First stage to run (the stages "
                                                     "before it must be complete)."),
                 until: Optional[str] = typer.Option(None, "--until", help="Last stage to run."),
                 fresh: bool = typer.Option(False, "--fresh", help="Start the selected stages again: delete "
                                            "their outputs first.")) -> None:
    from .pipeline import load_config, parse_overrides, run_pipeline

    def work():
        cfg = load_config(config, parse_overrides(set_ or []))
        run_pipeline(cfg, echo=lambda s: console.print(s, highlight=False), start=start, until=until, fresh=fresh)

    _guarded(work, "what the stages wrote is kept; rerun the same command to resume")


# -- `coderl serve-executor`: the sandboxed executor as an HTTP service (coderl.serve) -----------
from .execution.exec_config import ExecConfig  # noqa: E402
from .serve.serve_config import ServeConfig  # noqa: E402


@verb(app, "serve-executor", {"serve": ServeConfig, "execution": ExecConfig})
def serve_executor_cmd(*, given: dict) -> None:
    """Serve the sandboxed executor over HTTP: POST /run_code (SandboxFusion's API, for veRL),
    POST /v1/execute (programs + a problem's tests -> coderl results), GET /health, GET /metrics.
    Binds 127.0.0.1; any other address needs --token (or $CODERL_SERVE_TOKEN). Ctrl-C stops it
    after the requests in flight."""
    from .serve.server import serve

    def work():
        serve_cfg = from_dict(ServeConfig, given["serve"], "serve-executor options")
        exec_cfg = from_dict(ExecConfig, given["execution"], "serve-executor options")
        try:
            serve(serve_cfg, exec_cfg, echo=lambda m: err_console.print(m, highlight=False))
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
            err_console.print("coderl executor stopped", highlight=False)

    _guarded(work)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
