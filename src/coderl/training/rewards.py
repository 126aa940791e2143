"""Rewards as plain callables ``(problem, program, result) -> float`` (ARCHITECTURE.md).

:func:`coderl_reward` is CodeRL's table (:class:`coderl.execution.outcome.Rewards`), optionally
with RLTF's partial credit for failed programs; :func:`pass_fail_reward` is 1 for a passing program and
0 for any other (no credit for failing "less badly"); :func:`pass_ratio_reward` the share of the
tests passed (credit per test, none for how the others failed); any callable of the same shape can be passed to
:func:`coderl.training.train_rl` (``reward=``).
"""

from __future__ import annotations

from typing import Any, Callable

from ..execution.outcome import Rewards, pass_fail, pass_ratio

Reward = Callable[[Any, str, dict], float]


def coderl_reward(partial_credit: bool = False, rewards: Rewards | None = None) -> Reward:
    """CodeRL's reward table (``partial_credit``: RLTF's reward for failed programs)."""
    table = rewards or Rewards(partial_credit=partial_credit)

    def reward(problem: Any, program: str, result: dict) -> float:
        return float(table.reward(result))

    return reward


def pass_fail_reward() -> Reward:
    """1.0 for a program that passes every test, 0.0 for any other outcome: a group with no
    passing program has all-equal rewards and teaches nothing, instead of pushing runtime errors
    towards wrong answers as CodeRL's table does."""
    def reward(problem: Any, program: str, result: dict) -> float:
        return pass_fail(result)

    return reward


def pass_ratio_reward() -> Reward:
    """The share of the hidden tests the program passed (1.0 passed, 0.0 compile error): a group
    with no passing program still ranks programs by the tests they pass, not by how they fail."""
    def reward(problem: Any, program: str, result: dict) -> float:
        return pass_ratio(result)

    return reward
