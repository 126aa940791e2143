"""The CriticScores record: per sample, the critic's class probabilities and per-token values.

    scores = read_scores(run_dir / SCORES_FILE)
    s = scores[("mbpp/601", 3)]
    s.probs       # (C,) float16: softmax of the max-pooled token logits (the program's class)
    s.p_pass      # s.probs[pass class]: the binary critic's sequence score (ranking)
    s.q_outcome   # (n,) float16: q̂(w_t), each program token's probability of the sample's actual
                  #   outcome (RL's token weights); NaN where the outcome is unknown (not executed)
    s.q_pass      # (n,) float16: each program token's probability of ``passed`` (critic sampling)
    s.offsets     # (n, 2) int32: each token's [start, end) character span in ``Sample.program``
    scores.meta   # classes, checkpoint, fingerprint, ...

One ``.npz`` (no pickles) holds every sample: flat token arrays (``token_start[i]:token_start[i+1]``
are sample i's tokens), keyed by ``problem_id`` and ``index``; written atomically.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..execution.codes import OUTCOMES
from ..io import RecordError, atomic_file
from ..rundir import RunDir
from ..records import program_hash  # noqa: F401  (re-exported: scores name their program)

SCORES_FILE = RunDir.CRITIC_SCORES
PARTS_SUFFIX = ".parts"  # <scores file>.parts/: chunks written while scoring (resume)


@dataclass
class SampleScores:
    problem_id: str
    index: int
    probs: np.ndarray          # (C,)
    q_outcome: np.ndarray      # (n,)
    q_pass: np.ndarray         # (n,)
    offsets: np.ndarray        # (n, 2)
    outcome: str | None = None
    pass_class: int = -1
    program_hash: str = ""     # of the program scored (a changed sample is scored again)

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.index)

    @property
    def p_pass(self) -> float:
        return float(self.probs[self.pass_class])

    @property
    def num_tokens(self) -> int:
        return int(len(self.q_pass))


class CriticScores(dict):
    """``{(problem_id, index): SampleScores}`` with the file's ``meta``."""

    def __init__(self, items: Iterable[tuple[tuple[str, int], SampleScores]] = (), meta: dict | None = None):
        super().__init__(items)
        self.meta: dict[str, Any] = dict(meta or {})


def write_scores(path: str | Path, records: Iterable[SampleScores], meta: dict[str, Any]) -> Path:
    """Write ``records`` to ``path`` (atomically)."""
    path = Path(path)
    recs = list(records)
    C = len(meta.get("classes") or []) or (len(recs[0].probs) if recs else 0)
    lengths = np.array([r.num_tokens for r in recs], dtype=np.int64)
    start = np.zeros(len(recs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=start[1:])
    cat = lambda xs, shape, dtype: (np.concatenate(xs).astype(dtype) if xs  # noqa: E731
                                    else np.zeros(shape, dtype=dtype))
    arrays = {
        "problem_id": np.array([r.problem_id for r in recs], dtype=str),
        "index": np.array([r.index for r in recs], dtype=np.int64),
        "program_hash": np.array([r.program_hash for r in recs], dtype=str),
        "probs": (np.stack([np.asarray(r.probs, dtype=np.float16) for r in recs]) if recs
                  else np.zeros((0, C), dtype=np.float16)),
        "outcome": np.array([OUTCOMES.index(r.outcome) if r.outcome in OUTCOMES else -1 for r in recs],
                            dtype=np.int8),
        "token_start": start,
        "q_outcome": cat([np.asarray(r.q_outcome).reshape(-1) for r in recs], (0,), np.float16),
        "q_pass": cat([np.asarray(r.q_pass).reshape(-1) for r in recs], (0,), np.float16),
        "offsets": cat([np.asarray(r.offsets).reshape(-1, 2) for r in recs], (0, 2), np.int32),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    with atomic_file(path, binary=True, suffix=".tmp.npz") as f:
        np.savez(f, **arrays)
    return path


def read_scores(path: str | Path) -> CriticScores:
    """All scores of ``path``; a malformed file is a RecordError naming it."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(path, None, "is a directory, not a critic scores file (.npz)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run coderl critic-score)")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        what = str(e) if "pickle" not in str(e) else "not a NumPy .npz archive"
        raise RecordError(path, None, f"not a critic scores file ({what}): give the .npz that "
                          "coderl critic-score wrote") from None
    need = ("problem_id", "index", "probs", "token_start", "q_outcome", "q_pass", "offsets", "meta")
    missing = [k for k in need if k not in a]
    if missing:
        raise RecordError(path, None, f"critic scores file without {missing}")
    try:
        meta = json.loads(str(a["meta"]))
    except ValueError as e:
        raise RecordError(path, None, f"unreadable meta: {e}") from None
    n, start = len(a["index"]), a["token_start"]
    T = len(a["q_pass"])
    if (len(a["problem_id"]) != n or len(a["probs"]) != n or len(start) != n + 1
            or (n and int(start[-1]) != T) or len(a["q_outcome"]) != T or len(a["offsets"]) != T):
        raise RecordError(path, None, "inconsistent array lengths (a truncated or hand-edited file?)")
    outcome = a.get("outcome", np.full(n, -1, dtype=np.int8))
    hashes = a.get("program_hash", np.array([""] * n, dtype=str))
    classes = meta.get("classes") or []
    pc = classes.index("passed") if "passed" in classes else a["probs"].shape[-1] - 1
    out = CriticScores(meta=meta)
    for i in range(n):
        pid, idx = str(a["problem_id"][i]), int(a["index"][i])
        if (pid, idx) in out:
            raise RecordError(path, None, f"duplicate scores for (problem_id={pid!r}, index={idx})")
        s, e = int(start[i]), int(start[i + 1])
        o = int(outcome[i])
        out[(pid, idx)] = SampleScores(pid, idx, a["probs"][i], a["q_outcome"][s:e], a["q_pass"][s:e],
                                       a["offsets"][s:e], OUTCOMES[o] if 0 <= o < len(OUTCOMES) else None,
                                       pc, str(hashes[i]) if len(hashes) == n else "")
    return out
