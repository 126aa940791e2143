"""The critic's training data: samples joined with their results (:func:`coderl.records.join`),
gold programs, split by problem.

* **Gold programs**: each problem's ``solutions`` join as ``origin=gold``, labelled ``passed``,
  with indices -1, -2, ..., unless the samples already hold executed gold programs of that
  problem; held-out problems' stay out unless ``gold_in_validation``.
* **Split by problem**: a seeded shuffle of the sorted problem ids holds ``val_fraction`` of them
  out (then ``test_fraction`` for test: the best epoch is chosen on validation, reported on test).

Errors (``CriticError``): an empty training set, an empty held-out split that was asked for, a
split with no ``passed`` program. Warnings: most selected problems have no sampled program; a
training problem with no passed program (an error with ``require_pass``).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..execution.codes import CRITIC_CLASS, OUTCOMES, PASSED
from ..records import join

SPLITS = ("train", "validation", "test")


class CriticError(ValueError):
    """Bad input to the critic; the message names the file and, where known, the record."""


@dataclass
class Example:
    """One labelled program of the critic's data."""

    problem_id: str
    index: int          # the sample's index; gold programs added from the problem: -1, -2, ...
    origin: str         # sampled | greedy | refined | repaired | gold
    program: str
    outcome: str        # compile_error | runtime_error | failed | passed
    split: str = "train"


def class_names(num_classes: int) -> tuple[str, ...]:
    """The critic's classes, in the order of its softmax."""
    if num_classes == 4:
        return tuple(sorted(CRITIC_CLASS, key=CRITIC_CLASS.get))
    if num_classes == 2:
        return ("not_passed", PASSED)
    raise CriticError(f"num_classes must be 2 or 4, got {num_classes}")


def pass_class(num_classes: int) -> int:
    """Index of ``passed`` in the critic's softmax."""
    return CRITIC_CLASS[PASSED] if num_classes == 4 else 1


def label(outcome: str, num_classes: int) -> int:
    """The critic class of an outcome (CRITIC_CLASS for 4 classes; passed=1 / not=0 for 2)."""
    if outcome not in CRITIC_CLASS:
        raise CriticError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    return CRITIC_CLASS[outcome] if num_classes == 4 else int(outcome == PASSED)


@dataclass
class TrainingData:
    train: list[Example]
    validation: list[Example]
    test: list[Example] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples_path: str = ""
    results_path: str = ""

    @property
    def examples(self) -> list[Example]:
        return self.train + self.validation + self.test

    def summary(self) -> dict[str, Any]:
        def part(exs: list[Example]) -> dict[str, Any]:
            return {"programs": len(exs), "problems": len({e.problem_id for e in exs}),
                    "outcomes": dict(sorted(Counter(e.outcome for e in exs).items())),
                    "origins": dict(sorted(Counter(e.origin for e in exs).items()))}
        out = {"train": part(self.train), "validation": part(self.validation)}
        if self.test:
            out["test"] = part(self.test)
        return {**out, "warnings": len(self.warnings)}


def split_problems(problem_ids: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """The validation ids of :func:`split_problems3` without a test split."""
    return split_problems3(problem_ids, val_fraction, 0.0, seed)[0]


def split_problems3(problem_ids: Sequence[str], val_fraction: float, test_fraction: float,
                    seed: int, fold: int = 0) -> tuple[set[str], set[str]]:
    """(validation ids, test ids) from a seeded shuffle of the sorted ids: validation the first
    ``round(val_fraction * n)`` (at least one), test the next ``round(test_fraction * n)``, one left
    to train on; ``fold`` k first rotates by k validation shares (disjoint folds)."""
    ids = sorted(set(problem_ids))
    if len(ids) < 2:
        return set(), set()
    random.Random(seed).shuffle(ids)
    last = None
    if fold:
        shift = fold * int(math.floor(val_fraction * len(ids) + 0.5))
        if shift >= len(ids):
            return set(), set()
        ids = ids[shift:] + ids[:shift]
        last = len(ids) - shift  # the last fold is the rest: folds never overlap

    def count(frac: float, room: int) -> int:
        return 0 if frac <= 0 or room <= 0 else min(room, max(1, int(math.floor(frac * len(ids) + 0.5))))

    n_val = count(val_fraction, len(ids) - 1)
    if last is not None and (fold + 1) * val_fraction >= 1 - 1e-9:
        n_val = min(len(ids) - 1, last)
    n_test = count(test_fraction, len(ids) - 1 - n_val)
    return set(ids[:n_val]), set(ids[n_val:n_val + n_test])


def build_training_data(problems, samples_path: str | Path, results_path: str | Path, *,
                        include_gold: bool = True, gold_in_validation: bool = False,
                        val_fraction: float = 0.15, split_seed: int = 0,
                        require_pass: bool = False, num_classes: int = 4,
                        test_fraction: float = 0.0, val_fold: int = 0) -> TrainingData:
    """The critic's labelled programs, split by problem (see the module docstring)."""
    by_id = {p.id: p for p in problems}
    pairs = join(samples_path, results_path, by_id)
    per_problem: dict[str, list[Example]] = defaultdict(list)
    for s, r in pairs:
        per_problem[s.problem_id].append(Example(s.problem_id, s.index, s.origin, s.program, r["outcome"]))
    sampled = {pid for pid, exs in per_problem.items() if any(e.origin != "gold" for e in exs)}
    if include_gold:
        for pid, p in by_id.items():
            if any(e.origin == "gold" for e in per_problem.get(pid, [])):
                continue  # executed gold programs are in the samples already
            for j, sol in enumerate(p.solutions or []):
                if isinstance(sol, str) and sol.strip():
                    per_problem[pid].append(Example(pid, -(j + 1), "gold", sol, PASSED))
    if not any(per_problem.values()):
        raise CriticError(f"empty training set: no programs in {samples_path} (with results in "
                          f"{results_path}) for the {len(by_id)} selected problems"
                          + ("" if include_gold else ", and gold programs are off"))
    held_out, tested = split_problems3([pid for pid, exs in per_problem.items() if exs], val_fraction,
                                       test_fraction, split_seed, fold=val_fold)
    train, val, test, warnings = [], [], [], []
    if 2 * len(sampled) < len(by_id):
        warnings.append(f"only {len(sampled)} of the {len(by_id)} selected problems have sampled "
                        f"programs in {samples_path}: the critic learns mostly from gold programs "
                        "(select the problems the samples are of)")
    order = [p.id for p in problems if per_problem.get(p.id)]
    for pid in order:
        split = "validation" if pid in held_out else "test" if pid in tested else "train"
        exs = per_problem[pid]
        if split != "train" and not gold_in_validation:
            exs = [e for e in exs if e.origin != "gold"]
        for e in exs:
            e.split = split
        if split == "train" and exs and not any(e.outcome == PASSED for e in exs):
            # (held-out problems carry no gold: most have no passed program, which is normal)
            msg = (f"problem {pid!r} (train) has no passed program among its {len(exs)} in "
                   f"{samples_path}" + ("" if include_gold else " (gold programs are off)"))
            if require_pass:
                raise CriticError(f"{results_path}: {msg} (require_pass is on)")
            warnings.append(msg)
        {"train": train, "validation": val, "test": test}[split].extend(exs)
    if not train:
        raise CriticError(f"empty training set: every problem with programs in {samples_path} "
                          "was held out for validation; lower val_fraction or add problems")
    for name, frac, held, exs in (("validation", val_fraction, held_out, val), ("test", test_fraction, tested, test)):
        if frac > 0 and not exs:
            raise CriticError(_empty_split(name, frac, len(held), len(order), len(sampled), len(by_id), samples_path))
    for name, exs in (("train", train), ("validation", val), ("test", test)):
        if exs and not any(e.outcome == PASSED for e in exs):
            raise CriticError(f"{results_path}: the {name} split ({len(exs)} programs of "
                              f"{len({e.problem_id for e in exs})} problems) has no passed program: "
                              "the critic cannot learn or be measured on passed vs not. Add "
                              "gold programs (include_gold), more samples, or change split_seed")
        if exs and num_classes and len({label(e.outcome, num_classes) for e in exs}) < 2 and name == "train":
            raise CriticError(f"{results_path}: the train split has only one class "
                              f"({exs[0].outcome}); the critic needs programs of at least two classes")
    return TrainingData(train=train, validation=val, test=test, warnings=warnings,
                        samples_path=str(samples_path), results_path=str(results_path))


def _empty_split(name: str, fraction: float, held: int, with_programs: int, sampled: int, selected: int,
                 samples_path) -> str:
    if not held:
        why = f"no problem could be held out of the {with_programs} with programs (a split needs 2)"
    else:
        why = (f"its {held} problems (of the {with_programs} with programs) have no sampled program, "
               "and a held-out problem's gold programs are left out (gold_in_validation keeps them)")
    return (f"{samples_path}: the {name} split is empty ({name} fraction {fraction}): {why}; "
            f"{sampled} of the {selected} selected problems have sampled programs. Select the problems "
            f"that were sampled, or set {'val' if name == 'validation' else 'test'}_fraction: 0 (no "
            f"{name} metrics)")


# benchmarks/critic_ranking.py joins samples and results under this name
join_samples_results = join
