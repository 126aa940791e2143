"""One reader and one writer per record type: the contract between stages (ARCHITECTURE.md, "Records").

Readers validate every record and raise ``RecordError`` naming the file, the line and what is
wrong; a second record for the same ``(problem_id, index)`` is an error naming both lines;
``problems`` (ids) rejects records of other problems. Writers append one flushed line per record
under an exclusive lock. :func:`join` is the one way results meet their samples.
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
        _check(path, line, "sample", d, "program", allowed={f.name for f in dataclasses.fields(cls)})
        s = cls(**d)
        if s.origin not in ORIGINS:
            raise RecordError(path, line, f"sample origin {s.origin!r} not one of {ORIGINS}")
        s.problem_id = str(s.problem_id)
        return s

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.index)


def _check(path, line, what: str, d: dict, field: str, allowed: set[str] | None = None) -> None:
    """The fields every ``what`` record has (problem_id, index >= 0, ``field``); only ``allowed``."""
    spec = (("problem_id", (str, int)), ("index", (int,)), (field, (str,)))
    for key, _ in spec:
        if key not in d:
            raise RecordError(path, line, f"{what} has no {key!r} field")
    unknown = sorted(set(d) - allowed) if allowed is not None else []
    if unknown:
        raise RecordError(path, line, f"{what} record has unknown field(s) {unknown}")
    for key, types in spec:
        v = d.get(key)
        if not isinstance(v, types) or isinstance(v, bool):
            raise RecordError(path, line, f"{key!r} must be "
                                          f"{'/'.join(t.__name__ for t in types)} in a {what}, got {type(v).__name__} {v!r}")
    if d["index"] < 0:
        raise RecordError(path, line, f"{what} index must be >= 0, got {d['index']}")


def _checked_keys(path, records: list, problems: Collection[str] | None, what: str) -> list:
    """``records`` ((line, record, key) each), checked: no two share a key and, with ``problems``,
    none is of another problem."""
    first: dict[tuple[str, int], int] = {}
    for line, _, key in records:
        if key in first:
            raise RecordError(path, line, f"duplicate record for (problem_id={key[0]!r}, index={key[1]}): "
                                          f"line {first[key]} has the same key (two runs wrote into one "
                                          "file?). Remove one of them, or start the run fresh.")
        first[key] = line
    for line, _, key in records:
        if problems is not None and key[0] not in problems:
            known = ", ".join(list(problems)[:3]) + (", ..." if len(problems) > 3 else "")
            raise RecordError(path, line, f"{what} with unknown problem_id {key[0]!r}: not in the "
                                          f"selected problems ({len(problems)}: {known})")
    return records


def read_samples(path: str | Path, problems: Collection[str] | None = None, *, resume: bool = False) -> list[Sample]:
    """All samples of a JSONL file (``resume``: a torn last line left by a kill is dropped)."""
    return [s for _, s, _ in _read_samples(path, problems, resume)]


def _read_samples(path, problems, resume) -> list[tuple[int, Sample, tuple[str, int]]]:
    recs = []
    for line, d in _lines(path, resume):
        s = Sample.from_dict(d, path=path, line=line)
        recs.append((line, s, s.key))
    return _checked_keys(path, recs, problems, "sample")


def read_results(path: str | Path, problems: Collection[str] | None = None, *,
                 resume: bool = False) -> list[dict[str, Any]]:
    """All results of a JSONL file as dicts; ``resume`` as for :func:`read_samples`."""
    return [d for _, d, _ in _read_results(path, problems, resume)]


def _read_results(path, problems, resume) -> list[tuple[int, dict[str, Any], tuple[str, int]]]:
    recs = []
    for line, d in _lines(path, resume):
        _check(path, line, "result", d, "outcome")
        if d["outcome"] not in OUTCOMES:
            raise RecordError(path, line, f"unknown outcome {d['outcome']!r}; expected one of {OUTCOMES}")
        d["problem_id"] = str(d["problem_id"])
        recs.append((line, d, (d["problem_id"], d["index"])))
    return _checked_keys(path, recs, problems, "result")


def _lines(path: str | Path, resume: bool):
    """(line number, dict) for each record; numbers count every line, blank ones included."""
    if Path(path).is_dir():
        raise RecordError(path, None, "is a directory, not a JSONL file")
    yield from read_jsonl(path, tolerate_torn_tail=resume, numbered=True)


def sample_writer(path: str | Path) -> JsonlAppender:
    """Append samples (or results) to ``path`` under an exclusive lock."""
    return JsonlAppender(path, lock=True)


result_writer = sample_writer


def program_hash(program: str) -> str:
    """The short hash that names a program in results (``program_hash``) and critic scores."""
    return hashlib.sha1(program.encode()).hexdigest()[:16]


def join(samples_path: str | Path, results_path: str | Path | None, problem_ids: Collection[str] | None = None, *,
         require_results: bool = True) -> list[tuple[Sample, dict[str, Any] | None]]:
    """``(Sample, result dict)`` pairs in the samples' order. A result of another program than its
    sample's (``program_hash``), a result without a sample and, with ``require_results``, a
    sample without a result are RecordErrors: never a silent wrong verdict."""
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
