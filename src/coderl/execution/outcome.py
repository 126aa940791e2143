"""The Result record (one program on one test set) and the rewards table.

Outcome names, CodeRL codes and critic classes live in ``codes.py`` (re-exported here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from coderl.execution.codes import *  # noqa: F401,F403
from coderl.execution.codes import CODES, CRITIC_CLASS, FAILED, OUTCOMES, PASSED


@dataclass
class Result:
    """The verdict of one program on one test set. JSON-serialisable via ``to_dict``."""

    problem_id: str
    index: int
    outcome: str
    tests_passed: int = 0
    tests_total: int = 0
    per_test: list[Any] = field(default_factory=list)  # CodeRL codes of the tests that ran
    error_type: str | None = None
    error_message: str | None = None
    error_line: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_time: float = 0.0
    hash: str = ""
    isolation: str = ""
    detail: str | None = None
    example_passed: bool | None = None
    tests: str = "hidden"  # which test set: hidden | example
    cached: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")

    @property
    def code(self) -> int | bool:
        return CODES[self.outcome]

    @property
    def critic_class(self) -> int:
        return CRITIC_CLASS[self.outcome]

    @property
    def pass_ratio(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["code"] = self.code
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def pass_fail(result: Result | dict[str, Any]) -> float:
    """1.0 for a program that passed every test, 0.0 for any other outcome (no credit for failing
    "less badly", unlike :class:`Rewards`)."""
    outcome = result.get("outcome") if isinstance(result, dict) else result.outcome
    return 1.0 if outcome == PASSED else 0.0


def pass_ratio(result: Result | dict[str, Any]) -> float:
    """The share of the program's tests it passed (1.0 for a passing program, 0.0 for one that does
    not compile): credit for every test passed, none for *how* the others failed — a crash and a
    wrong answer that pass as many tests are equal, unlike :class:`Rewards`' table. With early exit
    (``ExecConfig.early_exit``, the default) an assert/call problem stops at its first runtime error
    and a stdio one at its first failed test: the tests after it count as not passed; run without
    early exit for the share of all tests."""
    if isinstance(result, dict):
        result = Result.from_dict(result)
    return 1.0 if result.outcome == PASSED else result.pass_ratio


@dataclass
class Rewards:
    """Reward per outcome. CodeRL's defaults; ``partial_credit`` gives RLTF's reward to failed programs."""

    compile_error: float = -1.0
    runtime_error: float = -0.6
    failed: float = -0.3
    passed: float = 1.0
    partial_credit: bool = False  # RLTF: failed -> failed + (passed - failed) * pass ratio

    def reward(self, result: Result | dict[str, Any]) -> float:
        if isinstance(result, dict):
            result = Result.from_dict(result)
        if self.partial_credit and result.outcome == FAILED:
            return self.failed + (self.passed - self.failed) * result.pass_ratio
        return getattr(self, result.outcome)
