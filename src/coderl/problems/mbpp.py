"""MBPP (Austin et al., 2021) from the official ``mbpp.jsonl`` shipped in ``data/mbpp`` (splits by
``task_id``: :data:`SPLITS`). Example tests are ``test_list`` (the standard prompt shows them);
hidden tests are ``test_list`` + ``challenge_test_list``, run after ``test_setup_code``.

The **held-out variant** (``heldout=True``; spec ``mbpp-heldout``) shows only the first assert of
``test_list``; the hidden tests stay all of them, so hard-coding the shown test fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .rows import jsonl_rows
from .schema import Problem, ProblemError

SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def split_of(task_id: int) -> str:
    for name, (lo, hi) in SPLITS.items():
        if lo <= task_id <= hi:
            return name
    return "unknown"


def _entry_point(code: str, asserts: list[str]) -> str | None:
    """The function the tests call: a name defined in the reference code that the asserts use."""
    defined = re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, re.M)
    joined = "\n".join(asserts)
    for name in defined:
        if re.search(rf"\b{re.escape(name)}\s*\(", joined):
            return name
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", joined)
    return m.group(1) if m else (defined[0] if defined else None)


def load_mbpp(path: str | Path, include_challenge: bool = True, heldout: bool = False) -> list[Callable[[], Problem]]:
    def build(row: dict, where: str, lineno: int) -> Problem:
        if "task_id" not in row:
            raise ProblemError(where, f"line {lineno}", "expected an MBPP object with 'task_id'")
        tid = int(row["task_id"])
        pid = f"mbpp/{tid}"
        for key in ("text", "code", "test_list"):
            if key not in row:
                raise ProblemError(where, pid, f"missing field {key!r}")
        code = row["code"].replace("\r\n", "\n")
        test_list = list(row["test_list"])
        challenge = list(row.get("challenge_test_list") or [])
        setup = (row.get("test_setup_code") or "").replace("\r\n", "\n")
        hidden = test_list + (challenge if include_challenge else [])
        p = Problem(
            id=pid, source="mbpp", split=split_of(tid), question=row["text"], kind="assert",
            entry_point=_entry_point(code, hidden),
            tests={"setup": setup, "asserts": hidden, "check": None},
            example_tests={"setup": setup, "asserts": test_list[:1] if heldout else test_list,
                           "check": None},
            solutions=[code], meta={"task_id": tid, "num_challenge_tests": len(challenge),
                                    **({"variant": "heldout"} if heldout else {})},
        )
        p.validate(where)
        return p

    return jsonl_rows(path, build)
