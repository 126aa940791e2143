"""Request bodies of the service, validated strictly (no "4" for 4, no 1 for "1"): a wrong type or
value is a 422 naming the field (``problem.tests``, ``programs.3``), a body that is not JSON a 400.

* ``RunCodeRequest`` – SandboxFusion's ``POST /run_code`` body, as veRL's sandbox_fusion client
  sends it (``code``, ``language``, ``stdin``, ``run_timeout``, ``compile_timeout``,
  ``memory_limit_MB``, ``files: {}``, ``fetch_files: []``); other keys are ignored, as there.
* ``ExecuteRequest`` – the native batch: programs + one problem's test fields (coderl's ``Problem``
  schema, ``src/coderl/problems/schema.py``); unknown keys are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coderl.problems.schema import DIFFICULTIES, KINDS, SOURCES, Problem, ProblemError

Positive = Field(default=None, gt=0)


def unencodable(value: Any) -> str | None:
    """Where in ``value`` (nested lists and dicts, keys too) a string is not valid Unicode text
    (a lone surrogate, which JSON's ``"\\ud800"`` can carry), as ``[in .a.0 ]at character i``; or None."""
    stack = [(value, "")]
    while stack:
        v, p = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"{'in ' + p + ' ' if p else ''}at character {e.start}"
        elif isinstance(v, dict):
            for k, x in v.items():
                stack += [(k, f"{p} (a key)"), (x, f"{p}.{k}")]
        elif isinstance(v, (list, tuple)):
            stack += [(x, f"{p}.{i}") for i, x in enumerate(v)]
    return None


class Utf8Model(BaseModel):
    """Every string in the request must be valid Unicode (422 otherwise): a lone surrogate can be
    neither written to a program's stdin nor sent to a worker."""

    @field_validator("*")
    @classmethod
    def _utf8(cls, v: Any) -> Any:
        where = unencodable(v)
        if where is not None:
            raise ValueError(f"not valid Unicode text (a lone surrogate such as \\ud800) {where}")
        return v


class RunCodeRequest(Utf8Model):
    model_config = ConfigDict(strict=True, extra="ignore")

    code: str
    language: str = "python"
    stdin: str | None = None
    run_timeout: float | None = Positive
    compile_timeout: float | None = Positive  # accepted; Python's compile step is part of the run
    memory_limit_MB: int | None = Positive
    files: dict[str, str] = Field(default_factory=dict)
    fetch_files: list[Any] = Field(default_factory=list)

    @field_validator("language")
    @classmethod
    def _python_only(cls, v: str) -> str:
        if v != "python":
            raise ValueError(f"language {v!r} is not supported: this sandbox runs python only")
        return v

    @field_validator("files", "fetch_files")
    @classmethod
    def _no_files(cls, v: Any) -> Any:
        if v:
            raise ValueError("extra files are not supported: the program runs alone in an empty directory")
        return v


class ProblemIn(Utf8Model):
    """A problem's fields as in ``Problem`` (``kind`` and ``tests`` required, the rest optional)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    kind: Literal[KINDS]  # type: ignore[valid-type]
    tests: dict[str, Any]
    example_tests: dict[str, Any] = Field(default_factory=dict)
    entry_point: str | None = None
    id: str = "served"
    source: Literal[SOURCES] = "jsonl"  # type: ignore[valid-type]  # (apps: CodeRL's import block)
    question: str = "(served)"
    prompt: str | None = None
    starter_code: str = ""
    split: str = "unknown"
    difficulty: Literal[DIFFICULTIES] = "unknown"  # type: ignore[valid-type]
    solutions: list[str] = Field(default_factory=list)
    url: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_problem(self) -> Problem:
        """The ``Problem``; its own checks (test encodings per kind) raise ProblemError."""
        data = self.model_dump()
        if not data["question"].strip():
            data["question"] = "(served)"
        p = Problem(**data)
        p.validate("problem")
        return p


class ExecuteRequest(Utf8Model):
    model_config = ConfigDict(strict=True, extra="forbid")

    programs: list[str] = Field(min_length=1)
    problem: ProblemIn
    tests: Literal["hidden", "example"] = "hidden"
    timeout: float | None = Positive
    memory_mb: int | None = Positive
    early_exit: bool | None = None


def problem_error_message(e: ProblemError) -> str:
    """A ProblemError as one line naming the request's field (``problem``: ...)."""
    return f"problem: {e.what}"
