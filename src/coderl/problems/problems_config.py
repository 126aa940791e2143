"""Which problems a run holds: the config shared by every verb that takes problems."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import opt, validate
from .schema import DIFFICULTIES


@dataclass
class ProblemsConfig:
    source: str = opt("mbpp", "Problem set: mbpp, mbpp-heldout (only the first assert shown), humaneval, "
                      "apps, an APPS folder or a JSONL file.", flag="--problems",
                      shown="mbpp in a recipe; required by a verb unless a selection is recorded beside "
                            "its samples")
    path: str | None = opt(None, "Data file or folder for the source (APPS folder/JSONL, MBPP/HumanEval file).")
    split: str | None = opt(None, "Split: train, test, validation or prompt (MBPP); a split the data "
                            "does not have is an error.")
    difficulties: list[str] | None = opt(None, "Keep these difficulties (repeatable).",
                                         choices=DIFFICULTIES, flag="--difficulty")
    start: int | None = opt(None, "First problem position (as in CodeRL's scripts).", ge=0)
    end: int | None = opt(None, "One past the last problem position.", ge=0)
    ids: list[str] | None = opt(None, "Keep only these problem ids (repeatable).", flag="--id")
    heldout: bool = opt(False, "MBPP: show only the first assert of test_list as the example test "
                        "(prompt and example_tests); the hidden tests stay all of them.")
    skip_invalid: bool = opt(False, "Skip invalid problems and list them instead of failing.")

    def __post_init__(self) -> None:
        validate(self, "problems")

    def load(self):
        from . import load_problems

        return load_problems(self.source, path=self.path, split=self.split,
                             difficulties=self.difficulties, start=self.start, end=self.end,
                             ids=self.ids, skip_invalid=self.skip_invalid, heldout=self.heldout)
