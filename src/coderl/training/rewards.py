"""Rewards as plain callables ``(problem, program, result) -> float`` (ARCHITECTURE.md).

:func:`coderl_reward` is CodeRL's table (compile error -1, runtime error -0.6, failed -0.3,
passed +1; :class:`coderl.execution.outcome.Rewards`), optionally with RLTF's partial credit for
failed programs (-0.3 + 1.3 x the share of tests passed). Any other callable of the same shape
can be passed to :func:`coderl.training.train_rl` (``reward=``). The baseline and the relative
return built on it are :mod:`coderl.training.objective`'s.
"""

from __future__ import annotations

from typing import Any, Callable

from ..execution.outcome import Rewards

Reward = Callable[[Any, str, dict], float]


def coderl_reward(partial_credit: bool = False, rewards: Rewards | None = None) -> Reward:
    """CodeRL's reward table (``partial_credit``: RLTF's reward for failed programs)."""
    table = rewards or Rewards(partial_credit=partial_credit)

    def reward(problem: Any, program: str, result: dict) -> float:
        return float(table.reward(result))

    reward.table = table  # type: ignore[attr-defined]
    return reward
