"""Rewards as plain callables ``(problem, program, result) -> float`` (ARCHITECTURE.md).

:func:`coderl_reward` is CodeRL's table (compile error -1, runtime error -0.6, failed -0.3,
passed +1; :class:`coderl.execution.outcome.Rewards`), optionally with RLTF's partial credit for
failed programs (-0.3 + 1.3 x the share of tests passed). Any other callable of the same shape
can be passed to :func:`coderl.training.train_rl` (``reward=``).
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


def relative_return(reward: float, baseline: float | None, relative: bool = True) -> float:
    """r(W^s) - r(W^b), with r(W^b) = 0 when there is no baseline (or ``relative`` is off)."""
    if not relative or baseline is None:
        return float(reward)
    return float(reward) - float(baseline)
