"""Log-probabilities of a group of continuations of one prompt, the prompt run once.

Online RL samples G programs per problem and updates on all of them: computed one by one, the
problem's prompt (often longer than the programs) would run G times in every forward and backward
pass. Here it runs once: its keys and values are repeated for the group
(``DynamicCache.batch_repeat_interleave``) and the G continuations attend to them; gradients flow
back through the shared prompt states into every weight (LoRA adapters on the prompt positions
included), so the loss and its gradients equal the unshared computation's (tests pin this).

    lp, mask = group_token_logprobs(model, prompt_ids, [prog1_ids, prog2_ids, ...])
    loss = -(advantages[:, None] * lp * mask).sum() / mask.sum()

A micro-batch of several problems' samples (offline RL with ``share_prompts``: each problem's
samples kept together by the data order) runs each distinct prompt once
(:func:`prompt_groups`, :func:`batch_logprobs`), in the layout :func:`coderl.training.losses.collate`
gives the unshared computation.
"""

from __future__ import annotations

from typing import Sequence

import torch


def group_token_logprobs(model, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]],
                         pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, T)`` log-probabilities of each continuation's tokens after ``prompt_ids`` (a causal
    LM), and the ``(G, T)`` mask of real tokens (continuations are right-padded to the longest)."""
    if not prompt_ids or not continuations or min(len(c) for c in continuations) < 1:
        raise ValueError("group_token_logprobs: needs a prompt and non-empty continuations")
    dev = next(model.parameters()).device
    P, G, T = len(prompt_ids), len(continuations), max(len(c) for c in continuations)
    head = model(input_ids=torch.tensor([list(prompt_ids)], device=dev), use_cache=True)
    cache = head.past_key_values
    cache.batch_repeat_interleave(G)
    ids = torch.full((G, T), pad_id, dtype=torch.long, device=dev)
    mask = torch.zeros((G, T), dtype=torch.bool, device=dev)
    for i, c in enumerate(continuations):
        ids[i, :len(c)] = torch.tensor(list(c), device=dev)
        mask[i, :len(c)] = True
    attention = torch.cat([torch.ones((G, P), dtype=torch.long, device=dev), mask.long()], dim=1)
    positions = torch.arange(P, P + T, device=dev).expand(G, T)
    tail = model(input_ids=ids, attention_mask=attention, position_ids=positions, cache=cache,
                 use_cache=True)
    # the prompt's last position predicts each continuation's first token; position t its t+1-th
    logits = torch.cat([head.logits[:, -1:].expand(G, 1, -1), tail.logits[:, :-1]], dim=1).float()
    lp = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return lp, mask


def prompt_groups(examples: Sequence) -> list[tuple[list[int], list[int]]]:
    """The rows of ``examples`` that share a prompt: ``(prompt ids, row numbers)``, first seen first."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(tuple(e.prompt_ids), []).append(i)
    return [(list(p), rows) for p, rows in groups.items()]


def batch_logprobs(model, batch: dict, pad_id: int = 0) -> torch.Tensor:
    """``(B, T)`` log-probabilities of a collated micro-batch's targets (left-padded, as
    :func:`coderl.training.losses.token_logprobs` returns them), each of its ``prompt_groups`` run once."""
    targets, mask = batch["targets"], batch["target_mask"]
    T = targets.shape[1]
    rows: list = [None] * targets.shape[0]
    for prompt, members in batch["prompt_groups"]:
        conts = [targets[i][mask[i]].tolist() for i in members]
        lp, _ = group_token_logprobs(model, prompt, conts, pad_id)
        for j, i in enumerate(members):
            rows[i] = torch.cat([lp.new_zeros(T - len(conts[j])), lp[j, :len(conts[j])]])
    return torch.stack(rows)
