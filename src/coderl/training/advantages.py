"""Advantages of online RL, per group (one problem's G programs of a round):

* ``coderl``: CodeRL's relative return, reward minus the greedy program's reward (0 without one);
* ``group``: reward minus the group's mean (Dr. GRPO: no scaling);
* ``group_std``: the same divided by the group's standard deviation (GRPO).

A group whose rewards are all equal teaches nothing (under CodeRL's: when they also equal the
greedy program's); :func:`advantages` reports it.
"""

from __future__ import annotations

import math
from typing import Sequence

KINDS = ("coderl", "group", "group_std")


def advantages(rewards: Sequence[float], kind: str = "group", *, greedy_reward: float | None = None,
               eps: float = 1e-6) -> tuple[list[float], bool]:
    """(advantage per program, whether the group's rewards were all equal)."""
    if kind not in KINDS:
        raise ValueError(f"advantage kind {kind!r}: one of {KINDS}")
    r = [float(x) for x in rewards]
    if not r:
        return [], True
    bad = [x for x in r if not math.isfinite(x)]
    if bad:
        raise ValueError(f"rewards must be finite, got {bad[:3]}")
    equal = max(r) - min(r) <= eps
    if kind == "coderl":  # uninformative only where every program's reward equals the greedy one's
        base = 0.0 if greedy_reward is None else float(greedy_reward)
        adv = [x - base for x in r]
        return adv, all(abs(a) <= eps for a in adv)
    if len(r) < 2:
        raise ValueError("a group baseline needs at least 2 programs per group (group_size >= 2)")
    mean = sum(r) / len(r)
    adv = [x - mean for x in r]
    if kind == "group_std":
        std = math.sqrt(sum(a * a for a in adv) / len(adv))
        adv = [a / (std + eps) for a in adv]
    return ([0.0] * len(r) if equal else adv), equal
