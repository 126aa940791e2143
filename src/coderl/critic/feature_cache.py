"""The critic's feature cache (mode ``head``): the frozen backbone runs once over every distinct
(context, program); each program token's last hidden state is kept in float16 in
``<run>/critic/features/part-NNNNN.pt`` (``{"keys": [...], "feats": [tensor n_i x d, ...]}``, keyed
by :func:`program_key`), part by part (a killed run resumes). Head training then costs only the
head, and ``critic-score`` reuses the states (:func:`coderl.critic.scoring.cached_features`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch

FEATURE_CHUNK = 256                   # programs per cached-features part file


def program_key(enc) -> str:
    """What the backbone reads: the context's and the program's token ids (not the problem id)."""
    return hashlib.sha1(json.dumps([enc.ctx_ids, enc.prog_ids]).encode()).hexdigest()


def cache_features(critic, examples: Sequence, encs: Sequence, out: Path, *, batch_size: int,
                    share_prompt: bool, progress: bool) -> list[torch.Tensor]:
    """float16 hidden states ``[n_i, d]`` of each example's program tokens, kept in ``out``."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    have: dict[str, torch.Tensor] = {}
    parts = sorted(out.glob("part-*.pt"))
    for f in parts:
        d = torch.load(f, weights_only=True)
        have.update(zip(d["keys"], d["feats"]))
    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        first.setdefault(program_key(encs[i]), i)
    todo = [(k, i) for k, i in first.items() if k not in have]
    if todo:
        # problem by problem, so that a shared prompt runs once per chunk
        todo.sort(key=lambda ki: (examples[ki[1]].problem_id, ki[1]))
        bar = tqdm(total=len(first), initial=len(first) - len(todo), unit="prog", desc="critic features",
                   disable=not progress, dynamic_ncols=True)
        n_part = len(parts)
        for c in range(0, len(todo), FEATURE_CHUNK):
            chunk = todo[c:c + FEATURE_CHUNK]
            hs = critic.program_hidden([encs[i] for _, i in chunk], batch_size=batch_size,
                                       share_prompt=share_prompt, progress=bar.update)
            feats = [h.to(torch.float16).contiguous() for h in hs]
            keys = [k for k, _ in chunk]
            tmp = out / f".part-{n_part:05d}.pt.tmp"
            torch.save({"keys": keys, "feats": feats}, tmp)
            os.replace(tmp, out / f"part-{n_part:05d}.pt")
            n_part += 1
            have.update(zip(keys, feats))
        bar.close()
    return [have[program_key(enc)] for enc in encs]


def pad_features(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch of cached states: ``[B, L, d]`` float32 and the ``[B, L]`` mask of tokens."""
    pad = torch.nn.utils.rnn.pad_sequence
    return (pad([f.float() for f in feats], batch_first=True),
            pad([torch.ones(f.shape[0], dtype=torch.bool) for f in feats], batch_first=True))
