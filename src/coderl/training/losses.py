"""The actor's losses as plain functions, and the batching they read.

* :func:`collate` pads examples into tensors. Causal LMs are **left**-padded (positions counted
  from each row's first real token, as generation decodes), so every row's targets sit at the
  end and :func:`token_logprobs` asks for the logits of the last ``T + 1`` positions only;
  encoder-decoders get the prompt in the encoder, the shifted target in the decoder.
* :func:`token_logprobs`: ``log p(w_t | w_<t, D)`` per target token, ``(B, T)``, as
  ``logit[w_t] - logsumexp(logits)`` (no vocabulary-sized log-softmax kept for backward).
* :func:`sft_loss`: the targets' mean negative log-likelihood (SFT and RL's CE steps);
  :func:`vocab_kl`: the exact KL to the starting model at the target positions (SFT's anchor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:
    from .data import Example


def collate(examples: Sequence[Example], *, pad_id: int, is_encoder_decoder: bool,
            decoder_start_id: int | None = None) -> dict[str, Any]:
    """Tensors of a micro-batch: ``targets``, ``target_mask``, ``weights`` (q̂, 1 where absent) are
    ``(B, T)`` in the layout :func:`token_logprobs` returns; ``returns`` is ``(B,)``."""
    side = "right" if is_encoder_decoder else "left"
    targets, tmask, _ = pad_rows([e.target_ids for e in examples], pad_id, side)
    weights, _, _ = pad_rows([[1.0] * len(e.target_ids) if e.weights is None else e.weights[:len(e.target_ids)]
                              for e in examples], 1.0, side, torch.float32)
    out = {"targets": targets, "target_mask": tmask.bool(), "weights": weights,
           "returns": torch.tensor([float(e.ret) for e in examples], dtype=torch.float32)}
    if is_encoder_decoder:
        start = pad_id if decoder_start_id is None else decoder_start_id
        ids, mask, _ = pad_rows([e.prompt_ids for e in examples], pad_id)
        dec, dmask, _ = pad_rows([[start] + e.target_ids[:-1] for e in examples], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec,
                "decoder_attention_mask": dmask, **out}
    ids, mask, _ = pad_rows([e.prompt_ids + e.target_ids for e in examples], pad_id, "left")
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), **out}


def pad_rows(rows: Sequence[Sequence], pad: float, side: str = "right",
             dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``rows`` padded with ``pad`` on ``side``; the (long) mask of real entries; the shifts."""
    L = max(len(r) for r in rows)
    out = torch.full((len(rows), L), pad, dtype=dtype)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    shifts = []
    for i, r in enumerate(rows):
        s = L - len(r) if side == "left" else 0
        out[i, s:s + len(r)] = torch.tensor(r, dtype=dtype)
        mask[i, s:s + len(r)] = 1
        shifts.append(s)
    return out, mask, shifts


def num_tokens(batch: dict[str, Any]) -> int:
    """Real (non-pad) tokens of a micro-batch, prompt and target."""
    n = int(batch["attention_mask"].sum())
    if "decoder_attention_mask" in batch:
        n += int(batch["decoder_attention_mask"].sum())
    return n


def token_logprobs(model, batch: dict[str, Any]) -> torch.Tensor:
    """``(B, T)`` log-probabilities of the target tokens (masked positions: arbitrary finite)."""
    logits = target_logits(model, batch)
    chosen = logits.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def target_logits(model, batch: dict[str, Any]) -> torch.Tensor:
    """``(B, T, V)`` float32 logits predicting each target token."""
    targets = batch["targets"]
    if "decoder_input_ids" in batch:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=batch["decoder_input_ids"],
                    decoder_attention_mask=batch["decoder_attention_mask"], use_cache=False)
        logits = out.logits
    else:
        T = targets.shape[1]
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], use_cache=False, logits_to_keep=T + 1)
        logits = out.logits[:, -(T + 1):-1]
    return logits.float()


def masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask``, 0 elsewhere (padding and prompt positions of a target layout)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def nll_and_kl(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`sft_loss`, :func:`vocab_kl`) from one log-softmax of ``logits``."""
    lp = torch.log_softmax(logits, -1)
    return sft_loss(lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), mask), _kl(lp, ref_logits, mask)


def vocab_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the target positions of KL(policy || reference) over the whole vocabulary (exact,
    not a sampled-token estimate): the anchor that keeps SFT near its starting model."""
    return _kl(torch.log_softmax(logits, -1), ref_logits, mask)


def _kl(lp: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ref = torch.log_softmax(ref_logits.detach().float(), -1)
    kl = (lp.exp() * (lp - ref)).sum(-1)
    return masked(kl, mask).sum() / mask.sum().clamp(min=1)


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the target tokens of the micro-batch."""
    return -masked(logprobs, mask).sum() / mask.sum().clamp(min=1)
