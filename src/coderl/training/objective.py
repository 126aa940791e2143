"""CodeRL's objective, piece by piece (Le et al., 2022, section 3), for a sampled program
``W^s = (w_1 .. w_T)`` of a problem ``D``:

1. **Reward** ``r(W)``: the unit-test outcome (compile error -1, runtime error -0.6, failed -0.3,
   passed +1; :func:`coderl.training.rewards.coderl_reward`).
2. **Baseline** ``W^b``: the problem's greedy program (:func:`greedy_baselines`); the return is
   ``r(W^s) - r(W^b)`` (:func:`relative_return`; 0 baseline without one): a sample is pushed up
   only when it beats what the model already writes greedily.
3. **Token weights** ``q̂(w_t)``: the critic's probability of the actual outcome at each program
   token, carried onto the sampled tokens (:func:`align_weights`); 1 without a critic.
4. **Loss** ``L_rl = - mean_t (r(W^s) - r(W^b)) q̂(w_t) log p(w_t | w_<t, D)`` (:func:`rl_loss`),
   optionally plus a KL penalty to the starting model (:func:`kl_penalty`; not in the paper);
   online RL's off-policy mini-batches use the clipped surrogate (:func:`clipped_pg_loss`).
5. **Alternation**: one CE step on gold programs after every ``ce_every`` RL steps
   (:func:`schedule`).

Token weights: the critic scores ``Sample.program`` while training reads ``Sample.raw``: each raw
token gets the mean q̂ of the program characters it covers; tokens covering none (the closing
fence, the end token) take the value of the token before them.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # torch loads with the losses (the data side of this module needs none)
    import torch


def greedy_baselines(samples: Iterable[Any], rewards: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """``r(W^b)`` per problem: the reward of its (first) greedy program (``origin == "greedy"``)."""
    out = {}
    for s in samples:
        if s.origin == "greedy" and s.problem_id not in out:
            out[s.problem_id] = rewards[s.key]
    return out


def mean_baselines(samples: Iterable[Any], rewards: Mapping[tuple[str, int], float],
                   origins: Sequence[str]) -> dict[str, float]:
    """Per problem, the mean reward of its samples of ``origins`` (``rl.baseline: mean``): centred
    returns, as online RL's group baseline, instead of the greedy program's reward."""
    by = {}
    for s in samples:
        if s.origin in origins:
            by.setdefault(s.problem_id, []).append(rewards[s.key])
    return {pid: sum(v) / len(v) for pid, v in by.items()}


def relative_return(reward: float, baseline: float | None, relative: bool = True) -> float:
    """r(W^s) - r(W^b), with r(W^b) = 0 when there is no baseline (or ``relative`` is off)."""
    return float(reward) - (float(baseline) if relative and baseline is not None else 0.0)


def align_weights(raw: str, raw_offsets: Sequence[tuple[int, int]], program: str,
                  q: np.ndarray, offsets: np.ndarray, n_targets: int) -> list[float]:
    """q̂ for each of ``n_targets`` target tokens (the raw text's, spans ``raw_offsets``) from the
    critic's values ``q`` of ``program``'s tokens (spans ``offsets``), aligning raw and program."""
    qc = np.full(len(program), np.nan)
    for v, (a, b) in zip(np.asarray(q, dtype=np.float64), np.asarray(offsets).reshape(-1, 2)):
        if b > a:
            qc[max(0, a):min(len(program), b)] = v
    to_prog = np.full(len(raw), -1, dtype=np.int64)
    for blk in difflib.SequenceMatcher(None, raw, program, autojunk=False).get_matching_blocks():
        to_prog[blk.a:blk.a + blk.size] = np.arange(blk.b, blk.b + blk.size)
    w = np.full(n_targets, np.nan)
    for t, (a, b) in enumerate(list(raw_offsets)[:n_targets]):
        idx = to_prog[a:b]
        vals = qc[idx[idx >= 0]]
        vals = vals[np.isfinite(vals)]
        if len(vals):
            w[t] = float(vals.mean())
    finite = np.isfinite(w)
    if not finite.any():
        return [1.0] * n_targets
    # forward fill (leading gaps: the first value)
    fill = np.maximum.accumulate(np.where(finite, np.arange(n_targets), finite.argmax()))
    return [float(x) for x in w[fill]]


def rl_loss(logprobs: torch.Tensor, mask: torch.Tensor, returns: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """CodeRL's policy-gradient loss: ``- mean_samples mean_t (r(W^s) - r(W^b)) q̂(w_t) log p(w_t)``
    (``weights`` = q̂, None: 1; ``returns`` = the relative returns, ``(B,)``)."""
    from .losses import masked

    w = mask.to(logprobs.dtype) if weights is None else masked(weights.to(logprobs.dtype), mask)
    per_sample = (returns.to(logprobs.dtype)[:, None] * w * masked(logprobs, mask)).sum(1)
    return -(per_sample / mask.sum(1).clamp(min=1)).mean()


def clipped_pg_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
                    advantages: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (online RL's later mini-batches), ``rho_t = p(w_t) / p_old(w_t)``:
    ``- mean min(rho_t A, clip(rho_t, 1 - e, 1 + e) A)`` averaged like :func:`rl_loss`; the clipped share."""
    from .losses import masked

    ratio = masked(logprobs - old_logprobs.to(logprobs.dtype), mask).exp()
    a = advantages.to(logprobs.dtype)[:, None]
    surr = (ratio * a).minimum(ratio.clamp(1 - clip, 1 + clip) * a)
    per_sample = masked(surr, mask).sum(1) / mask.sum(1).clamp(min=1)
    clipped = ((ratio - 1).abs() > clip) & mask
    return -per_sample.mean(), clipped.sum() / mask.sum().clamp(min=1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(policy || reference) on the sampled tokens: ``exp(d) - d - 1``, ``d = ref - logp``."""
    from .losses import masked

    d = masked(ref_logprobs.detach() - logprobs, mask)
    return ((d.exp() - d - 1).sum(1) / mask.sum(1).clamp(min=1)).mean()


def step_kind(step: int, ce_every: int) -> str:
    """``rl`` or ``ce`` for step ``step``: a CE step after every ``ce_every`` RL steps (0: none)."""
    return "ce" if ce_every > 0 and step % (ce_every + 1) == ce_every else "rl"


def schedule(rl_steps: int, ce_every: int) -> list[str]:
    """The kinds of all steps of a run with ``rl_steps`` RL steps (a complete group ends with CE)."""
    total = rl_steps + (rl_steps // ce_every if ce_every > 0 else 0)
    return [step_kind(s, ce_every) for s in range(total)]
