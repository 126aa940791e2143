"""The critic: a backbone plus a head on every program token's hidden state.

* **Causal backbones** (the default): ``context + program`` (tokenized apart so the boundary is
  exact); only the program's tokens are scored, not the prompt nor padding.
* **Encoder-decoder backbones** (T5 / CodeT5, the paper's): the problem goes to the encoder, the
  program to the decoder as ``[decoder_start] + program``.
* **Head**: Linear(d, H) -> ReLU -> Linear(H, C) on each program token's last hidden state;
  training max-pools the token logits over the program (:func:`masked_max`).
* **Modes**: ``head`` (frozen backbone, kept in eval mode), ``top`` (the top N layers train),
  ``lora`` (peft adapters), ``full``.

A checkpoint holds ``critic_config.json``, ``critic_head.safetensors``, the tokenizer, and
``backbone/`` (modes top/full) or ``adapter/`` (lora); ``head`` refers to the backbone by path.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..io import atomic_dir
from ..training.losses import pad_rows as _pad_rows
from .data import CriticError, class_names, pass_class

CONFIG_FILE = "critic_config.json"
HEAD_FILE = "critic_head.safetensors"
BACKBONE_DIR = "backbone"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 1


@dataclass
class CriticSettings:
    """What ``critic_config.json`` records: enough to rebuild the critic."""

    num_classes: int = 4
    arch: str = "causal"                  # causal | seq2seq
    hidden_size: int = 0
    head_hidden: int = 128
    mode: str = "head"
    top_layers: int = 0
    lora: dict[str, Any] = field(default_factory=dict)
    backbone_spec: str = "default"         # what the user named
    backbone_path: str = ""                # the resolved HF directory
    prompt_style: str = "auto"
    max_context_tokens: int = 768
    max_program_tokens: int = 512
    padding_side: str = "right"
    classes: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION


@dataclass
class Encoded:
    """A (context, program) pair as token ids; ``offsets``: the program tokens' character spans."""

    ctx_ids: list[int]
    prog_ids: list[int]
    offsets: list[tuple[int, int]]


class CriticHead(nn.Module):
    def __init__(self, d: int, num_classes: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def masked_max(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max-pool token logits ``[B, T, C]`` over the positions where ``mask`` ``[B, T]`` is true."""
    neg = torch.finfo(logits.dtype).min
    return logits.masked_fill(~mask.bool().unsqueeze(-1), neg).max(dim=1).values


def critic_context(problem, tokenizer, style: str = "auto", is_encoder_decoder: bool = False) -> str:
    """The problem as the critic reads it: the actor's prompt without its pre-filled code."""
    from ..models import build_prompt

    prompt = build_prompt(problem, tokenizer, style, is_encoder_decoder)
    text = prompt.text
    if prompt.prefix and text.endswith(prompt.prefix):
        text = text[: len(text) - len(prompt.prefix)]
    return text if text.strip() else problem.question  # (empty: the prompt is the program's start, HumanEval plain)


def _submodule(module: nn.Module, names: tuple[str, ...], kind: type) -> Any:
    """The first of ``module``'s attributes ``names`` that is a (non-empty) ``kind``; None."""
    for name in names:
        m = getattr(module, name, None)
        if isinstance(m, kind) and (kind is not nn.ModuleList or len(m)):
            return m
    return None


class CriticModel(nn.Module):
    """Backbone + head; see the module docstring."""

    def __init__(self, backbone: nn.Module, tokenizer, settings: CriticSettings, *, peft_model: Any = None):
        super().__init__()
        self.backbone, self.tokenizer, self.settings = backbone, tokenizer, settings
        self.head = CriticHead(settings.hidden_size, settings.num_classes, settings.head_hidden)
        object.__setattr__(self, "_peft", peft_model)  # not a submodule: its weights are ours
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(cls, spec: str = "default", *, num_classes: int = 4, mode: str = "head",
              top_layers: int = 2, lora_r: int = 16, lora_alpha: int = 32,
              lora_dropout: float = 0.05, lora_targets: Sequence[str] = ("all-linear",),
              head_hidden: int = 128, seed: int = 0, prompt_style: str = "auto",
              max_context_tokens: int = 768, max_program_tokens: int = 512,
              padding_side: str = "right", device: str = "cpu", dtype: str = "float32") -> "CriticModel":
        """A fresh critic on the backbone ``spec``; the head initialised from ``seed``."""
        from ..models import load_model

        lm = load_model(spec, device=device, dtype=dtype)
        settings = CriticSettings(
            num_classes=num_classes, arch="seq2seq" if lm.is_encoder_decoder else "causal",
            hidden_size=_hidden_size(lm.model.config), head_hidden=head_hidden, mode=mode,
            top_layers=top_layers if mode == "top" else 0, backbone_spec=str(spec),
            backbone_path=str(Path(lm.path).resolve()), prompt_style=prompt_style,
            max_context_tokens=max_context_tokens, max_program_tokens=max_program_tokens,
            padding_side=padding_side, classes=list(class_names(num_classes)))
        backbone, peft_model = lm.model, None
        if mode == "lora":
            settings.lora = {"r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                             "target_modules": list(lora_targets)}
            peft_model = _apply_lora(backbone, settings.lora)
        torch.manual_seed(seed)
        critic = cls(backbone, lm.tokenizer, settings, peft_model=peft_model)
        critic._set_trainable()
        return critic.to(device)

    def _set_trainable(self) -> None:
        mode = self.settings.mode
        if mode != "lora":  # (lora: peft froze the base and left the adapters trainable)
            self.backbone.requires_grad_(mode == "full")
        if mode == "top":
            stack = self.backbone.get_decoder() if self.is_encoder_decoder else self.backbone.base_model
            layers = _submodule(stack, ("layers", "h", "blocks", "block", "layer"), nn.ModuleList)
            if layers is None:
                raise CriticError(f"{self.settings.backbone_path}: cannot find the layers of "
                                  f"{type(self.backbone).__name__} to train the top ones; use mode lora or full")
            for layer in list(layers)[-self.settings.top_layers:]:
                layer.requires_grad_(True)
            norm = _submodule(stack, ("norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm"), nn.Module)
            if norm is not None:
                norm.requires_grad_(True)
        self.head.requires_grad_(True)

    def train(self, mode: bool = True) -> "CriticModel":
        super().train(mode)
        if self.settings.mode == "head":
            self.backbone.eval()  # frozen: no dropout, identical features in every epoch
        return self

    # -- properties -----------------------------------------------------------------------------
    @property
    def is_encoder_decoder(self) -> bool:
        return self.settings.arch == "seq2seq"

    @property
    def num_classes(self) -> int:
        return self.settings.num_classes

    @property
    def pass_class(self) -> int:
        return pass_class(self.settings.num_classes)

    @property
    def device(self) -> torch.device:
        return self.head.net[0].weight.device

    @property
    def _decoder_start(self) -> int:
        start = self.backbone.config.decoder_start_token_id
        return self.tokenizer.pad_token_id if start is None else start

    # -- text -> ids ----------------------------------------------------------------------------
    def context(self, problem) -> str:
        return critic_context(problem, self.tokenizer, self.settings.prompt_style, self.is_encoder_decoder)

    def encode(self, context: str, program: str) -> Encoded:
        """Token ids of the context (its end kept) and of the program (its start kept), with offsets."""
        tok = self.tokenizer
        ctx = tok(context, add_special_tokens=self.is_encoder_decoder).input_ids[-self.settings.max_context_tokens:]
        enc = tok(program, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc.input_ids)[: self.settings.max_program_tokens]
        offsets = [tuple(int(x) for x in o) for o in enc.offset_mapping[: len(ids)]]
        if not ids:  # an empty program still gets one value: on the end-of-sequence token
            ids, offsets = [tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id], [(0, 0)]
        return Encoded(list(ctx), ids, offsets)

    def collate(self, items: Sequence[Encoded], padding_side: str | None = None) -> dict[str, torch.Tensor]:
        """A padded batch; ``program_mask`` marks the program's tokens in the scored stream."""
        side = padding_side or self.settings.padding_side
        pad = self.tokenizer.pad_token_id
        if self.is_encoder_decoder:
            ids, mask, _ = _pad_rows([e.ctx_ids or [self.tokenizer.eos_token_id] for e in items], pad, side)
            dec, dmask, shifts = _pad_rows([[self._decoder_start] + e.prog_ids for e in items], pad, side)
            pmask = torch.zeros_like(dmask, dtype=torch.bool)
            for i, (e, s) in enumerate(zip(items, shifts)):
                pmask[i, s + 1:s + 1 + len(e.prog_ids)] = True
            return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec,
                    "decoder_attention_mask": dmask, "program_mask": pmask}
        ids, mask, shifts = _pad_rows([e.ctx_ids + e.prog_ids for e in items], pad, side)
        pmask = torch.zeros_like(mask, dtype=torch.bool)
        for i, (e, s) in enumerate(zip(items, shifts)):
            c = s + len(e.ctx_ids)
            pmask[i, c:c + len(e.prog_ids)] = True
        return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
                "program_mask": pmask}

    # -- forward --------------------------------------------------------------------------------
    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last layer's hidden states of the scored stream, ``[B, T, d]``."""
        if self.is_encoder_decoder:
            enc = self.backbone.get_encoder()(input_ids=batch["input_ids"],
                                             attention_mask=batch["attention_mask"]).last_hidden_state
            return self.backbone.get_decoder()(
                input_ids=batch["decoder_input_ids"], attention_mask=batch["decoder_attention_mask"],
                encoder_hidden_states=enc, encoder_attention_mask=batch["attention_mask"],
                use_cache=False).last_hidden_state
        return self.backbone.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        position_ids=batch["position_ids"], use_cache=False).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token logits ``[B, T, C]`` (meaningful where ``batch["program_mask"]``)."""
        return self.head(self.hidden_states(batch).to(self.head.net[0].weight.dtype))

    @torch.no_grad()
    def program_hidden(self, items: Sequence[Encoded], *, batch_size: int = 32,
                       share_prompt: bool = True, progress=None) -> list[torch.Tensor]:
        """Each program's token hidden states ``[n_i, d]`` (float32, CPU). ``share_prompt``: a shared
        context runs once, its KV cache (or encoder states) reused, with the same states as alone."""
        if share_prompt:  # by context, shorter programs first
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, e in enumerate(items):
                groups.setdefault(tuple(e.ctx_ids), []).append(i)
            orders = [sorted(idx, key=lambda i: len(items[i].prog_ids)) for idx in groups.values()]
        else:
            orders = [sorted(range(len(items)), key=lambda i: len(items[i].ctx_ids) + len(items[i].prog_ids))]
        was_training = self.training
        self.eval()
        out: list[torch.Tensor | None] = [None] * len(items)
        try:
            for order in orders:
                for k in range(0, len(order), batch_size):
                    chunk = order[k:k + batch_size]
                    if share_prompt:
                        hs = self._shared_prompt_hidden(items[chunk[0]].ctx_ids, [items[i].prog_ids for i in chunk])
                    else:
                        batch = {n: t.to(self.device) for n, t in self.collate([items[i] for i in chunk]).items()}
                        h, mask = self.hidden_states(batch).float().cpu(), batch["program_mask"].cpu()
                        hs = [h[row][mask[row]].clone() for row in range(len(chunk))]
                    for i, h in zip(chunk, hs):
                        out[i] = h
                    if progress:
                        progress(len(chunk))
        finally:
            self.train(was_training)
        return out  # type: ignore[return-value]

    def _shared_prompt_hidden(self, ctx: list[int], progs: list[list[int]]) -> list[torch.Tensor]:
        dev, pad = self.device, self.tokenizer.pad_token_id
        ids, pmask, _ = _pad_rows(progs, pad, "right")
        B, L = ids.shape
        ids, pmask = ids.to(dev), pmask.to(dev)
        if self.is_encoder_decoder:
            cids = torch.tensor([ctx or [self.tokenizer.eos_token_id]], dtype=torch.long, device=dev)
            cmask = torch.ones_like(cids)
            enc = self.backbone.get_encoder()(input_ids=cids, attention_mask=cmask).last_hidden_state
            dec = torch.cat([torch.full((B, 1), self._decoder_start, dtype=torch.long, device=dev), ids], 1)
            dmask = torch.cat([torch.ones((B, 1), dtype=torch.long, device=dev), pmask], 1)
            h = self.backbone.get_decoder()(
                input_ids=dec, attention_mask=dmask, encoder_hidden_states=enc.expand(B, -1, -1),
                encoder_attention_mask=cmask.expand(B, -1), use_cache=False).last_hidden_state[:, 1:]
        elif not ctx:
            pos = (pmask.cumsum(-1) - 1).clamp(min=0)
            h = self.backbone.base_model(input_ids=ids, attention_mask=pmask, position_ids=pos,
                                         use_cache=False).last_hidden_state
        else:
            base = self.backbone.base_model
            cids = torch.tensor([ctx], dtype=torch.long, device=dev)
            first = base(input_ids=cids, attention_mask=torch.ones_like(cids), use_cache=True)
            cache = getattr(first, "cache", None)  # transformers >= 5.x names it ``cache``
            if B > 1:
                cache = copy.deepcopy(cache)
                cache.batch_repeat_interleave(B)
            Lc = len(ctx)
            am = torch.cat([torch.ones((B, Lc), dtype=torch.long, device=dev), pmask], 1)
            pos = (Lc + torch.arange(L, device=dev)).unsqueeze(0).expand(B, -1)
            h = base(input_ids=ids, attention_mask=am, position_ids=pos, cache=cache, use_cache=True).last_hidden_state
        h = h.float().cpu()
        return [h[i, :len(p)].clone() for i, p in enumerate(progs)]

    @torch.no_grad()
    def score(self, items: Sequence[Encoded], *, batch_size: int = 32, share_prompt: bool = True,
              progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per item: the program's class probabilities ``(C,)`` and each token's ``(n, C)``."""
        hs = self.program_hidden(items, batch_size=batch_size, share_prompt=share_prompt, progress=progress)
        return [self.score_hidden(h) for h in hs]

    @torch.no_grad()
    def score_hidden(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.head.net[0].weight
        logits = self.head(h.to(device=w.device, dtype=w.dtype)).float().cpu()
        return torch.softmax(logits.max(dim=0).values, -1), torch.softmax(logits, -1)

    # -- save / load ----------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write the critic into ``path`` (replaced atomically)."""
        with atomic_dir(path) as tmp:
            self.save_files(tmp)
        return Path(path)

    def save_files(self, directory: str | Path) -> None:
        """Write the critic's files into the existing ``directory`` (not atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(directory)
        mode = self.settings.mode
        if mode in ("top", "full"):
            self.backbone.save_pretrained(directory / BACKBONE_DIR, safe_serialization=True)
        elif mode == "lora":
            self._peft.save_pretrained(str(directory / ADAPTER_DIR))
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.settings), indent=1) + "\n")

    @classmethod
    def read_settings(cls, path: str | Path) -> CriticSettings:
        path = Path(path)
        f = path / CONFIG_FILE
        if not f.is_file():
            raise CriticError(f"{path}: not a critic checkpoint (no {CONFIG_FILE}); train one with "
                              "coderl train-critic")
        try:
            return CriticSettings(**json.loads(f.read_text()))
        except (ValueError, TypeError) as e:
            raise CriticError(f"{f}: unreadable critic config: {e}") from None

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: str = "float32") -> "CriticModel":
        """Load a critic written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from ..models import load_model

        path = Path(path)
        s = cls.read_settings(path)
        if not (path / HEAD_FILE).is_file():
            raise CriticError(f"{path}: critic checkpoint without {HEAD_FILE}")
        base = s.backbone_path if s.backbone_path and Path(s.backbone_path).is_dir() else s.backbone_spec
        lm = load_model(str(path / BACKBONE_DIR) if s.mode in ("top", "full") else base, device=device, dtype=dtype)
        backbone, peft_model = lm.model, None
        if s.mode == "lora":
            from peft import PeftModel

            try:
                peft_model = PeftModel.from_pretrained(backbone, str(path / ADAPTER_DIR), is_trainable=True)
            except (OSError, ValueError) as e:
                raise CriticError(f"{path / ADAPTER_DIR}: cannot load the critic's adapter: {e}") from None
            backbone = peft_model.base_model.model
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        critic = cls(backbone, tokenizer, s, peft_model=peft_model)
        critic.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        critic._set_trainable()
        return critic.to(device).eval()

    def load_weights(self, path: str | Path) -> None:
        """Load the trainable weights of this critic's checkpoint ``path`` in place (resuming)."""
        from safetensors.torch import load_file

        path = Path(path)
        self.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        mode = self.settings.mode
        if mode in ("top", "full"):
            state = {k: v for f in sorted((path / BACKBONE_DIR).glob("*.safetensors"))
                     for k, v in load_file(str(f)).items()}
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            params = dict(self.backbone.named_parameters(remove_duplicate=False))
            loaded = {params[k].data_ptr() for k in state if k in params}
            untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
            if unexpected or untied:
                raise CriticError(f"{path / BACKBONE_DIR}: weights do not match the backbone "
                                  f"(missing {untied[:3]}, unexpected {unexpected[:3]})")
        elif mode == "lora":
            from peft import set_peft_model_state_dict

            files = sorted((path / ADAPTER_DIR).glob("*.safetensors"))
            if not files:
                raise CriticError(f"{path / ADAPTER_DIR}: no adapter weights")
            set_peft_model_state_dict(self._peft, load_file(str(files[0])))


def _hidden_size(config) -> int:
    for name in ("hidden_size", "d_model", "n_embd"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    text = getattr(config, "get_text_config", None)
    if text is not None:
        t = text()
        if t is not config:
            return _hidden_size(t)
    raise CriticError(f"cannot tell the hidden size of {type(config).__name__}")


def _apply_lora(backbone, lora: dict[str, Any]):
    from peft import LoraConfig, get_peft_model

    targets = lora["target_modules"]
    targets = targets[0] if len(targets) == 1 and targets[0] == "all-linear" else list(targets)
    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
                     target_modules=targets, bias="none")
    try:
        return get_peft_model(backbone, cfg)
    except ValueError as e:
        raise CriticError(f"LoRA on {type(backbone).__name__}: {e}") from None
