"""One reader and one writer per record type: the contract between stages (ARCHITECTURE.md, "Records").

Readers validate every record (required fields and their types, allowed values) and raise
``RecordError`` naming the file, the line and what is wrong. A second record for the same
``(problem_id, index)`` is an error (two runs wrote into one file, or a file was concatenated):
the message names both lines. ``problems`` (ids) makes a reader reject records of problems
outside the selection. Writers append one flushed line per record under an exclusive lock, so
two processes can never interleave records in one file. :func:`join` is the one way results meet
their samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from .io import JsonlAppender, RecordError, read_jsonl

ORIGINS = ("sampled", "greedy", "refined", "repaired", "gold")
from .execution.codes import OUTCOMES  # noqa: E402  (one definition of the outcome names and order)


@dataclass
class Sample:
    """One generated (or gold) program for one problem."""

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
        for k in ("problem_id", "index", "program"):
            if k not in d:
                raise RecordError(path, line, f"sample has no {k!r} field")
        unknown = sorted(set(d) - names)
        if unknown:
            raise RecordError(path, line, f"sample record has unknown field(s) {unknown}")
        _check(path, line, "sample", d, (("problem_id", (str, int)), ("index", (int,)), ("program", (str,))))
        if d["index"] < 0:
            raise RecordError(path, line, f"sample index must be >= 0, got {d['index']}")
        s = cls(**d)
        if s.origin not in ORIGINS:
            raise RecordError(path, line, f"sample origin {s.origin!r} not one of {ORIGINS}")
        s.problem_id = str(s.problem_id)
        return s

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.index)


def _check(path, line, what: str, d: dict, spec) -> None:
    for key, types in spec:
        v = d.get(key)
        if not isinstance(v, types) or isinstance(v, bool):
            raise RecordError(path, line, f"{key!r} must be "
                                          f"{'/'.join(t.__name__ for t in types)} in a {what}, got {type(v).__name__} {v!r}")


def _dedupe(path, records: list[tuple[int, Any, tuple[str, int]]]) -> None:
    first: dict[tuple[str, int], int] = {}
    for line, _, key in records:
        if key in first:
            raise RecordError(path, line, f"duplicate record for (problem_id={key[0]!r}, index={key[1]}): "
                                          f"line {first[key]} has the same key (two runs wrote into one "
                                          "file?). Remove one of them, or start the run fresh.")
        first[key] = line


def _outside(path, records, problems: Collection[str] | None, what: str) -> None:
    if problems is None:
        return
    for line, _, key in records:
        if key[0] not in problems:
            known = ", ".join(list(problems)[:3]) + (", ..." if len(problems) > 3 else "")
            raise RecordError(path, line, f"{what} with unknown problem_id {key[0]!r}: not in the "
                                          f"selected problems ({len(problems)}: {known})")


def read_samples(path: str | Path, problems: Collection[str] | None = None, *,
                 resume: bool = False) -> list[Sample]:
    """All samples of a JSONL file, in file order. ``resume``: the writer reading its own file
    back, where a torn last line left by a kill is dropped (anywhere else it is an error)."""
    return [s for _, s, _ in _read_samples(path, problems, resume)]


def _read_samples(path, problems, resume) -> list[tuple[int, Sample, tuple[str, int]]]:
    recs = []
    for line, d in _lines(path, resume):
        s = Sample.from_dict(d, path=path, line=line)
        recs.append((line, s, s.key))
    _dedupe(path, recs)
    _outside(path, recs, problems, "sample")
    return recs


def read_results(path: str | Path, problems: Collection[str] | None = None, *,
                 resume: bool = False) -> list[dict[str, Any]]:
    """All results of a JSONL file as dicts (the fields of ``coderl.execution.Result``);
    ``resume`` as for :func:`read_samples`."""
    return [d for _, d, _ in _read_results(path, problems, resume)]


def _read_results(path, problems, resume) -> list[tuple[int, dict[str, Any], tuple[str, int]]]:
    recs = []
    for line, d in _lines(path, resume):
        for k in ("problem_id", "index", "outcome"):
            if k not in d:
                raise RecordError(path, line, f"result has no {k!r} field")
        _check(path, line, "result", d, (("problem_id", (str, int)), ("index", (int,)), ("outcome", (str,))))
        if d["index"] < 0:
            raise RecordError(path, line, f"result index must be >= 0, got {d['index']}")
        if d["outcome"] not in OUTCOMES:
            raise RecordError(path, line, f"unknown outcome {d['outcome']!r}; expected one of {OUTCOMES}")
        d["problem_id"] = str(d["problem_id"])
        recs.append((line, d, (d["problem_id"], d["index"])))
    _dedupe(path, recs)
    _outside(path, recs, problems, "result")
    return recs


def _lines(path: str | Path, resume: bool):
    """(line number, dict) for each record; numbers count every line, blank ones included."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise RecordError(path, None, "is a directory, not a JSONL file")
    yield from read_jsonl(path, tolerate_torn_tail=resume, numbered=True)


def sample_writer(path: str | Path) -> JsonlAppender:
    """Append samples (``Sample.to_dict()``) to ``path`` under an exclusive lock."""
    return JsonlAppender(path, lock=True)


def result_writer(path: str | Path) -> JsonlAppender:
    """Append results (``Result.to_dict()``) to ``path`` under an exclusive lock."""
    return JsonlAppender(path, lock=True)


def program_hash(program: str) -> str:
    """The short hash that names a program in results (``program_hash``) and critic scores."""
    return hashlib.sha1(program.encode()).hexdigest()[:16]


def join(samples_path: str | Path, results_path: str | Path | None,
         problem_ids: Collection[str] | None = None, *,
         require_results: bool = True) -> list[tuple[Sample, dict[str, Any] | None]]:
    """``(Sample, result dict)`` pairs in the samples' file order: the one way every stage joins
    results to samples. A result must name the program it ran (``program_hash``) and it must be
    the sample's: a result of another program (the samples were regenerated, or another run's
    results were given) is a RecordError naming the file and line, never a silent verdict of the
    wrong program. A result without a sample is an error too; so is a sample without a result
    unless ``require_results`` is false (its result is then None)."""
    ids = set(problem_ids) if problem_ids is not None else None
    samples = _read_samples(samples_path, ids, False)
    by_key = {key: s for _, s, key in samples}
    res_by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for line, r, key in (_read_results(results_path, ids, False) if results_path is not None else []):
        s = by_key.get(key)
        if s is None:
            raise RecordError(results_path, line, f"result for (problem_id={key[0]!r}, index={key[1]}) "
                                                  f"has no sample in {samples_path}")
        ph = r.get("program_hash")
        if ph is None:
            raise RecordError(results_path, line, "result does not name the program it ran (written "
                              "before results carried program_hash): run coderl execute on "
                              f"{samples_path} again (it re-checks every result; the verdict cache "
                              "makes that quick)")
        if ph != program_hash(s.program):
            raise RecordError(results_path, line, f"result of (problem_id={key[0]!r}, index={key[1]}) is "
                              f"the verdict of another program than that sample in {samples_path} (the "
                              "samples were regenerated, or the results belong to another run): run "
                              "coderl execute on these samples")
        res_by_key[key] = r
    pairs = []
    for line, s, key in samples:
        r = res_by_key.get(key)
        if r is None and require_results:
            raise RecordError(samples_path, line, f"sample (problem_id={s.problem_id!r}, index={s.index}) "
                                                  f"has no result in {results_path}: execute it first "
                                                  "(coderl execute)")
        pairs.append((s, r))
    return pairs
