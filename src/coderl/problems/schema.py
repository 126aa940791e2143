"""The Problem record: the contract every loader produces and every stage reads.

A problem has hidden tests (the reward, pass@k) and example tests (those shown in the question:
critic sampling, n@k filtering).

Test encodings by ``kind``:

* ``stdio``  – ``tests = {"inputs": [str, ...], "outputs": [str, ...]}``; stdin fed, stdout compared.
* ``call``   – ``tests = {"fn_name": str, "inputs": [[arg, ...], ...], "outputs": [value, ...]}``;
  the function (or ``Solution().method``) is called with the arguments, return values compared.
* ``assert`` – ``tests = {"setup": str, "asserts": [str, ...], "check": str | None}``;
  MBPP ``assert`` statements run after ``test_setup_code``; HumanEval's ``check(candidate)``
  program is stored in ``check`` and called with ``entry_point``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("apps", "mbpp", "humaneval", "jsonl")
KINDS = ("stdio", "call", "assert")
DIFFICULTIES = ("introductory", "interview", "competition", "basic", "unknown")


class ProblemError(ValueError):
    """Bad problem input. The message always names the file and, where known, the problem id."""

    def __init__(self, path: Any, problem_id: Any, what: str):
        self.path = str(path)
        self.problem_id = None if problem_id is None else str(problem_id)
        self.what = what
        where = self.path if self.problem_id is None else f"{self.path} (problem {self.problem_id})"
        super().__init__(f"{where}: {what}")


@dataclass
class Problem:
    id: str
    source: str
    question: str
    kind: str
    tests: dict[str, Any]
    split: str = "unknown"
    difficulty: str = "unknown"
    starter_code: str = ""
    entry_point: str | None = None  # fn_name (APPS call-based, MBPP, HumanEval)
    example_tests: dict[str, Any] = field(default_factory=dict)
    solutions: list[str] = field(default_factory=list)
    url: str = ""
    prompt: str | None = None  # source-native prompt text (HumanEval signature + docstring)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- counting -----------------------------------------------------------------------------
    @staticmethod
    def count_tests(tests: dict[str, Any] | None, kind: str) -> int:
        if not tests:
            return 0
        if kind in ("stdio", "call"):
            return len(tests.get("inputs", []))
        return len(tests.get("asserts", [])) + (1 if tests.get("check") else 0)

    @property
    def num_tests(self) -> int:
        return self.count_tests(self.tests, self.kind)

    @property
    def num_example_tests(self) -> int:
        return self.count_tests(self.example_tests, self.kind)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, path: Any = "<dict>") -> "Problem":
        pid = d.get("id") if isinstance(d, dict) else None
        if not isinstance(d, dict):
            raise ProblemError(path, None, f"expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ProblemError(path, pid, f"unknown field(s) {unknown}; allowed: {sorted(names)}")
        missing = [k for k in ("id", "source", "question", "kind", "tests") if k not in d]
        if missing:
            raise ProblemError(path, pid, f"missing required field(s) {missing}")
        p = cls(**d)
        p.id = str(p.id)
        p.validate(path)
        return p

    def validate(self, path: Any = "<memory>") -> None:
        """Check the record's invariants; raise ProblemError naming ``path`` and the id."""
        err = lambda what: ProblemError(path, self.id, what)  # noqa: E731
        if self.source not in SOURCES:
            raise err(f"unknown source {self.source!r}; expected one of {SOURCES}")
        if self.kind not in KINDS:
            raise err(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.difficulty not in DIFFICULTIES:
            raise err(f"unknown difficulty {self.difficulty!r}; expected one of {DIFFICULTIES}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise err("empty question")
        for name in ("tests", "example_tests"):
            t = getattr(self, name)
            if not isinstance(t, dict):
                raise err(f"{name} must be an object, got {type(t).__name__}")
            if not t:
                if name == "tests":
                    raise err("no hidden tests")
                continue
            if self.kind in ("stdio", "call"):
                ins, outs = t.get("inputs"), t.get("outputs")
                if not isinstance(ins, list) or not isinstance(outs, list):
                    raise err(f"{name} needs 'inputs' and 'outputs' lists")
                if len(ins) != len(outs):
                    raise err(f"{name}: {len(ins)} inputs but {len(outs)} outputs")
                if name == "tests" and not ins:
                    raise err("no hidden tests")
                if self.kind == "stdio" and not all(isinstance(x, str) for x in ins + outs):
                    raise err(f"{name}: stdio inputs and outputs must be strings")
            else:
                asserts = t.get("asserts", [])
                if not isinstance(asserts, list) or not all(isinstance(a, str) for a in asserts):
                    raise err(f"{name}: 'asserts' must be a list of strings")
                for key in ("setup", "check"):
                    if t.get(key) is not None and not isinstance(t[key], str):
                        raise err(f"{name}: {key!r} must be a string (test code), got "
                                  f"{type(t[key]).__name__} {t[key]!r}")
                unknown = sorted(set(t) - {"setup", "asserts", "check"})
                if unknown:
                    raise err(f"{name}: unknown key(s) {unknown} for an assert problem; "
                              "allowed: setup, asserts, check")
                if name == "tests" and not asserts and not t.get("check"):
                    raise err("no hidden tests: neither 'asserts' nor 'check'")
        if self.kind == "call" and not (self.entry_point or self.tests.get("fn_name")):
            raise err("call-based problem without fn_name / entry_point")
