"""Refine: where to cut a program so the actor continues it (CodeRL §3.3).

The critic gives every program token a value P(passed); the prefix kept is the program up to its
highest-valued token (not the last one: something must be left to rewrite), optionally extended to
the end of that token's line. The critic's tokens come with character spans in the *program*; the
actor continues its own *raw* text (what it wrote, fence and all), so the cut is carried into the
raw text and moved back to the nearest token boundary of the actor's tokenizer there: the prefix is
always ``raw[:n]`` for a token boundary ``n`` of ``raw``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def best_cut(program: str, offsets: np.ndarray, q_pass: np.ndarray, cut: str = "line",
             start: int = 0) -> int | None:
    """Characters of ``program`` to keep: up to the token with the highest ``q_pass`` (the last
    token excluded, and tokens before character ``start``), or to the end of its line with
    ``cut="line"`` (when the line is not the program's last). None when no token is left."""
    n = min(len(offsets), len(q_pass))
    if n < 2:
        return None
    q = np.nan_to_num(np.asarray(q_pass[: n - 1], dtype=np.float64), nan=-1.0)
    q[np.asarray(offsets[: n - 1])[:, 0] < start] = -np.inf
    if not np.isfinite(q).any():
        return None
    t = int(np.argmax(q))  # the first of equal values
    end = int(offsets[t][1])
    if cut == "line":
        nl = program.find("\n", end)
        if 0 <= nl < len(program.rstrip()) - 1:
            end = nl + 1
    return end if 0 < end < len(program) else None


def raw_prefix(raw: str, program: str, end: int, prompt_prefix: str = "",
               token_ends: Sequence[int] | None = None) -> str | None:
    """The start of ``raw`` that holds ``program[:end]`` (found where the program's text appears in
    the raw text, after what the prompt pre-filled and any header extraction added), cut at the
    last token boundary at or before it (``token_ends``: the end offsets of ``raw``'s tokens).
    None when the program's text cannot be found in the raw text or no token boundary is left."""
    starts = [len(prompt_prefix)] if prompt_prefix and program.startswith(prompt_prefix) else []
    starts += [0] + [i + 1 for i, c in enumerate(program[:end]) if c == "\n"]
    n = None
    for m in dict.fromkeys(starts):
        head = program[m:end]
        if not head.strip():
            continue
        j = raw.find(head)
        if j >= 0:
            n = j + len(head)
            break
    if n is None:
        return None
    if token_ends is not None:
        ok = [e for e in token_ends if 0 < e <= n]
        if not ok:
            return None
        n = max(ok)
    return raw[:n] or None


def written_from(program: str, raw: str, prompt_prefix: str = "", probe: int = 40) -> int:
    """Where the part of ``program`` the model wrote begins: after the prompt's pre-filled code, or
    at the first line from which the program's text is found in ``raw`` (extraction can put the
    prompt's imports, or its whole signature and docstring, before what the model wrote)."""
    if prompt_prefix and program.startswith(prompt_prefix):
        return len(prompt_prefix)  # the pre-filled start is in the prompt, not in what was written
    for m in [0] + [i + 1 for i, c in enumerate(program) if c == "\n"]:
        chunk = program[m:m + probe]
        if chunk.strip() and chunk in raw:
            return m
    return len(program)


def token_ends(tokenizer, text: str) -> list[int]:
    """End offsets of ``text``'s tokens under ``tokenizer`` (a fast tokenizer's offset mapping)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(e) for _, e in enc["offset_mapping"]]
