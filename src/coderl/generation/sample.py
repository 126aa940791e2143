"""The Sample record: one generated (or gold) program for one problem. One JSONL line each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..io import RecordError

ORIGINS = ("sampled", "greedy", "refined", "repaired", "gold")


@dataclass
class Sample:
    problem_id: str
    index: int               # unique per problem (greedy samples come after the sampled ones)
    program: str             # extracted code: what the executor runs
    origin: str = "sampled"  # sampled | greedy | refined | repaired | gold
    prompt: str = ""         # the model input
    raw: str = ""            # the model's text
    logprob: float | None = None  # sum of the model's token log-probabilities
    num_tokens: int = 0      # generated tokens (stop string / end token included)
    finish: str = ""         # stop | eos | length ("" for gold)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, path: Any = "<dict>", line: int | None = None) -> "Sample":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("problem_id", "index", "program") if k not in d]
        if missing:
            raise RecordError(path, line, f"sample record misses field(s) {missing}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise RecordError(path, line, f"sample record has unknown field(s) {unknown}")
        s = cls(**d)
        if s.origin not in ORIGINS:
            raise RecordError(path, line, f"sample origin {s.origin!r} not one of {ORIGINS}")
        s.problem_id = str(s.problem_id)
        return s


def read_samples(path) -> list[Sample]:
    """All samples of a JSONL file (a torn last line left by a killed run is ignored)."""
    from ..io import read_jsonl

    return [Sample.from_dict(d, path=path, line=i + 1)
            for i, d in enumerate(read_jsonl(path, tolerate_torn_tail=True))]
