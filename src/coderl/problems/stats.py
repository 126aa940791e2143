"""Counts over problem sets: by source, split, difficulty and kind; tests and example tests."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from .schema import Problem


@dataclass
class GroupStats:
    source: str
    split: str
    problems: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    difficulties: dict[str, int] = field(default_factory=dict)
    tests: int = 0
    example_tests: int = 0
    with_examples: int = 0

    @property
    def tests_per_problem(self) -> float:
        return self.tests / self.problems if self.problems else 0.0

    @property
    def examples_per_problem(self) -> float:
        return self.example_tests / self.problems if self.problems else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tests_per_problem": round(self.tests_per_problem, 3),
                "examples_per_problem": round(self.examples_per_problem, 3)}


def problem_stats(problems: list[Problem]) -> list[GroupStats]:
    """One row per (source, split) plus an ``all`` row per source, in a stable order."""
    groups: dict[tuple[str, str], list[Problem]] = defaultdict(list)
    for p in problems:
        groups[(p.source, p.split)].append(p)
        groups[(p.source, "all")].append(p)
    order = {"all": 0, "train": 1, "validation": 2, "test": 3, "prompt": 4}
    rows = []
    for (source, split), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][1])):
        if split == "all" and len({p.split for p in ps}) == 1:
            continue  # the single split's row says it all
        rows.append(GroupStats(
            source=source, split=split, problems=len(ps), kinds=dict(Counter(p.kind for p in ps)),
            difficulties=dict(Counter(p.difficulty for p in ps)), example_tests=sum(p.num_example_tests for p in ps),
            tests=sum(p.num_tests for p in ps), with_examples=sum(1 for p in ps if p.num_example_tests)))
    return rows
