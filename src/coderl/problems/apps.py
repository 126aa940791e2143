"""APPS (Hendrycks et al., 2021) in both layouts users have.

* Folder layout (the original release, and CodeRL's ``data/APPS``)::

      <root>/<split>/<NNNN>/question.txt  input_output.json  solutions.json  metadata.json
                            [starter_code.py]  [example_input_output.json]

* Hugging Face JSONL layout: one row per problem (``solutions`` and ``input_output`` JSON strings).

``fn_name`` in ``input_output`` means a call-based problem, otherwise stdin/stdout. Example tests
come from ``example_input_output.json`` where present, else from the question text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .examples import extract_examples
from .rows import jsonl_rows
from .schema import DIFFICULTIES, Problem, ProblemError


def _read_text(path: Path, pid: str, *, required: bool = True) -> str | None:
    if not path.exists():
        if required:
            raise ProblemError(path, pid, f"missing {path.name}")
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProblemError(path, pid, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _read_json(path: Path, pid: str, *, required: bool = True) -> Any:
    text = _read_text(path, pid, required=required)
    return None if text is None else _parse_json(text, path, pid)


def _parse_json(text: str, path: Any, pid: str, what: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        label = f"{what}: " if what else ""
        raise ProblemError(path, pid, f"{label}malformed JSON ({e.msg}, line {e.lineno} column {e.colno})") from None


def _difficulty(value: Any, path: Any, pid: str) -> str:
    if value in (None, ""):
        return "unknown"
    if value not in DIFFICULTIES:
        raise ProblemError(path, pid, f"unknown difficulty {value!r}; expected one of {DIFFICULTIES}")
    return value


def _make_problem(pid: str, split: str, question: str, io: Any, solutions: Any, difficulty: str,
                  url: str, starter: str, examples: Any, path: Any, io_path: Any) -> Problem:
    if not isinstance(io, dict):
        raise ProblemError(io_path, pid, f"input_output must be an object, got {type(io).__name__}")
    fn_name = io.get("fn_name")
    kind = "call" if fn_name else "stdio"
    tests = {"inputs": io.get("inputs"), "outputs": io.get("outputs"), **({"fn_name": fn_name} if fn_name else {})}
    if examples is None:
        examples = extract_examples(question, fn_name)
    else:
        examples = {"inputs": examples.get("inputs", []), "outputs": examples.get("outputs", []),
                    **({"fn_name": fn_name} if fn_name else {})}
    solutions = [] if solutions is None else solutions
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise ProblemError(path, pid, "solutions must be a list of strings")
    p = Problem(id=pid, source="apps", split=split, difficulty=difficulty, question=question,
                starter_code=starter or "", entry_point=fn_name, kind=kind, tests=tests,
                example_tests=examples if examples.get("inputs") else {}, solutions=solutions, url=url or "")
    # input/output shape errors belong to input_output.json; the rest to the problem folder
    for name in ("tests", "example_tests"):
        t = getattr(p, name)
        if t and (not isinstance(t.get("inputs"), list) or not isinstance(t.get("outputs"), list)
                  or len(t["inputs"]) != len(t["outputs"])):
            p.validate(io_path)
    p.validate(path)
    return p


def load_apps_folder(root: str | Path, split: str = "train") -> list[Callable[[], Problem]]:
    """One loader thunk per problem folder (callers can skip the invalid ones)."""
    root = Path(root)
    base = root / split if (root / split).is_dir() else root
    splits = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name in ("train", "test")) \
        if root.is_dir() else []
    if base == root and splits:
        raise ProblemError(root, None, f"no split {split!r} here: this APPS folder has {splits}")
    if not base.is_dir():
        raise ProblemError(root, None, f"not an APPS folder (no {split}/ inside and not a directory)")
    dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))

    def loader(d: Path) -> Callable[[], Problem]:
        def load() -> Problem:
            pid = f"apps/{split}/{d.name}"
            question = _read_text(d / "question.txt", pid)
            io = _read_json(d / "input_output.json", pid)
            solutions = _read_json(d / "solutions.json", pid, required=False)
            meta = _read_json(d / "metadata.json", pid, required=False) or {}
            starter = _read_text(d / "starter_code.py", pid, required=False) or ""
            examples = _read_json(d / "example_input_output.json", pid, required=False)
            difficulty = _difficulty(meta.get("difficulty"), d / "metadata.json", pid)
            return _make_problem(pid, split, question, io, solutions, difficulty, meta.get("url", ""),
                                 starter, examples, d, d / "input_output.json")
        return load

    return [loader(d) for d in dirs]


def load_apps_jsonl(path: str | Path, split: str = "train") -> list[Callable[[], Problem]]:
    """Hugging Face ``codeparrot/apps`` rows (a local JSONL export), one loader thunk per row."""
    def build(row: dict, where: str, lineno: int) -> Problem:
        if "problem_id" not in row:
            raise ProblemError(where, f"line {lineno}", "expected an object with 'problem_id'")
        pid = f"apps/{split}/{int(row['problem_id']):04d}"
        io_raw = row.get("input_output") or "{}"
        io = _parse_json(io_raw, where, pid, "input_output") if isinstance(io_raw, str) else io_raw
        sol_raw = row.get("solutions") or "[]"
        sols = _parse_json(sol_raw, where, pid, "solutions") if isinstance(sol_raw, str) else sol_raw
        difficulty = _difficulty(row.get("difficulty"), where, pid)
        question = row.get("question")
        if not isinstance(question, str):
            raise ProblemError(where, pid, "missing question")
        return _make_problem(pid, split, question, io, sols, difficulty, row.get("url", ""),
                             row.get("starter_code", ""), None, where, where)

    return jsonl_rows(path, build)
