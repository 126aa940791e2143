"""The actor as the Trainer trains it: :class:`ActorTask`, whose subclasses add their loss step.

* **Model**: the LM with LoRA adapters (their ``base_model_name_or_path`` is the model spec the
  stage started from) or every weight trainable; the KL reference is a frozen copy with mode full
  (LoRA: the adapters switched off).
* **Validation**: the loss on the validation problems' gold programs and, every
  ``val_pass_every``-th validation (and at the end), a greedy pass@1 on the first
  ``val_pass_problems`` (under ``validation/step-NNNNNN/``); scored by the loss, or pass@1 then
  the loss (``best_metric``; ``last``: not scored, the last model is published).
* **Saved** as :func:`coderl.models.load_model` reads it; the selected model is published at the
  top of the stage directory (``<run>/sft/``, ``<run>/rl/``).
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import ConfigError
from . import losses
from .base_config import TrainerConfig
from .checkpoint import checkpoint_name, load_weights, model_signature, publish_model, save_model
from .data import Example, build_gold_examples
from .engine import LoopSettings, Trainer, peak_rss_mb
from .task import Point, RunResult, TrainingTask, Validation

VALIDATION_DIR = "validation"     # greedy pass@1 samples and results, per validation step


def adapter_base_spec(spec: str, out: Path) -> str:
    """The ``base_model_name_or_path`` a saved adapter carries: a known name as it is; a model of the
    same run directory relative to the adapter (``../sft``); any other path made absolute."""
    p = Path(str(spec)).expanduser()
    if p.exists() and p.absolute().parent == Path(out).absolute().parent:
        return f"../{p.name}"
    return str(p.resolve()) if p.exists() else str(spec)


def gold_examples(problems: Sequence, cfg, lm, shapes: Sequence[str] = ("native",), *,
                  style: str | None = None) -> tuple[list[Example], dict[str, Any]]:
    """The gold examples of ``problems`` under ``cfg`` in the prompt ``shapes`` (the layout ``style``,
    default ``cfg.gold_style``), and their counts."""
    return build_gold_examples(problems, lm.tokenizer, lm.is_encoder_decoder, prompt_style=cfg.prompt_style,
                               max_prompt_tokens=cfg.max_prompt_tokens, max_target_tokens=cfg.max_target_tokens,
                               max_solutions=getattr(cfg, "max_solutions", 0), reorder=getattr(cfg, "gold_reorder", True),
                               shapes=tuple(shapes), style=style or getattr(cfg, "gold_style", "raw"))


def validation_set(problems: Sequence, cfg, lm, val_problems: Sequence | None, *, style: str | None = None):
    """(validation problems, default the config's, but ``problems``; their gold examples in the
    layout ``style`` (default ``cfg.gold_style``), counts)."""
    if val_problems is None and cfg.val_source:
        from ..problems import load_problems

        val_problems = load_problems(cfg.val_source, split=cfg.val_split or None, end=cfg.val_limit or None)
    train_ids = {p.id for p in problems}
    val_problems = [p for p in val_problems or [] if p.id not in train_ids]
    return (val_problems, *gold_examples(val_problems, cfg, lm, style=style))


class ActorTask(TrainingTask):
    """The actor's side of a training run; subclasses define :meth:`loss`."""

    stale_outputs = (VALIDATION_DIR,)

    def __init__(self, *, name: str, out: Path, cfg: TrainerConfig, lm, base_spec: str,
                 val_examples: list[Example], val_problems: Sequence, data_info: dict[str, Any],
                 needs_reference: bool = False, exec_config: Any = None):
        self.name, self.out, self.cfg, self.lm, self.base_spec = name, Path(out), cfg, lm, base_spec
        self.published = self.out
        self.val_examples, self.val_problems = val_examples, list(val_problems)
        self.data_info, self.info = data_info, {"data": data_info}
        self.needs_reference, self.exec_config = needs_reference, exec_config
        self.accelerator: Any = None      # build()
        self.ref_model: Any = None        # build(), mode full with a KL term

    def train(self, source, fingerprint: dict[str, Any], examples: Sequence[Example], *, progress: bool,
              on_step, echo) -> dict[str, Any]:
        """Run the Trainer on ``source``; ``examples`` are listed in ``data.jsonl``."""
        settings = LoopSettings.of(self.cfg, self.cfg.SECTION, progress=progress and self.cfg.progress)
        return Trainer(self, source, settings, out=self.out, fingerprint=fingerprint,
                       data_records=[e.summary() for e in examples], on_step=on_step, echo=echo).run()

    # -- the model --------------------------------------------------------------------------------
    def build(self, accelerator) -> torch.nn.Module:
        cfg = self.cfg
        self.accelerator = accelerator
        model = self.lm.model
        model.train()
        if cfg.gradient_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.25's name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if self.needs_reference and cfg.mode == "full":
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
        if cfg.mode == "lora":
            from peft import LoraConfig, TaskType, get_peft_model

            targets = "all-linear" if cfg.lora_targets == ["all-linear"] else list(cfg.lora_targets)
            task = TaskType.SEQ_2_SEQ_LM if self.lm.is_encoder_decoder else TaskType.CAUSAL_LM
            try:
                model = get_peft_model(model, LoraConfig(
                    r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    target_modules=targets, bias="none", task_type=task))
            except ValueError as e:
                raise ConfigError(f"{cfg.SECTION}.lora_targets: LoRA on {type(model).__name__}: {e}") from None
            for c in model.peft_config.values():
                c.base_model_name_or_path = self.base_spec
        return model

    def collate(self, kind: str, items: list[Example]) -> dict[str, Any]:
        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        start = getattr(self.lm.model.config, "decoder_start_token_id", None)
        return losses.collate(items, pad_id=pad, is_encoder_decoder=self.lm.is_encoder_decoder,
                              decoder_start_id=start)

    def num_tokens(self, batch: dict[str, Any]) -> int:
        return losses.num_tokens(batch)

    def logprobs(self, model, batch: dict) -> torch.Tensor:
        """``(B, T)`` log-probabilities of the targets (online RL overrides it)."""
        return losses.token_logprobs(model, batch)

    def reference_logprobs(self, model, batch: dict) -> torch.Tensor:
        """log-probs of the targets under the starting model (no gradient)."""
        return self.reference_call(model, self.logprobs, batch)

    def reference_call(self, model, fn, batch: dict) -> torch.Tensor:
        """``fn(starting model, batch)`` without gradient: LoRA's adapters off, or mode full's copy."""
        with torch.no_grad():
            if self.ref_model is not None:
                return fn(self.ref_model, batch)
            inner = self.accelerator.unwrap_model(model)
            was_training = inner.training
            inner.eval()   # the reference without dropout, as mode full's frozen copy
            try:
                with inner.disable_adapter():
                    return fn(model, batch)
            finally:
                inner.train(was_training)

    # -- validation -------------------------------------------------------------------------------
    def validate(self, model, point: Point) -> Validation | None:
        cfg = self.cfg
        passes = cfg.val_pass_every and self.val_problems
        if not (self.val_examples or passes):
            return None
        vloss = self.validation_loss(model)
        entry = {"step": point.step, "loss": None if vloss is None else round(vloss, 6)}
        if passes and (point.index % cfg.val_pass_every == 0 or point.at_end):
            entry.update(self.greedy_pass_at_1(model, point.step))
        score = None
        if cfg.best_metric == "pass@1" and entry.get("pass@1") is not None:
            score = [entry["pass@1"], -(vloss or 0.0)]
        elif cfg.best_metric == "loss" and vloss is not None:
            score = [-vloss]
        # best_metric "last": no score, nothing published as best; the last model is published at the end
        shown = f"validation at step {point.step}: loss {entry['loss']}"
        if entry.get("pass@1") is not None:
            shown += f", greedy pass@1 {entry['pass@1']:.3f} ({entry['problems']} problems)"
        return Validation(entry=entry, score=score, shown=shown,
                          best={"step": point.step, "loss": entry["loss"], "pass@1": entry.get("pass@1")},
                          scalars={f"validation/{k}": entry[k] for k in ("loss", "pass@1")
                                   if entry.get(k) is not None})

    def validation_loss(self, model) -> float | None:
        if not self.val_examples:
            return None
        model.eval()
        order = sorted(range(len(self.val_examples)), key=lambda i: self.val_examples[i].num_tokens)
        nll, n, size = 0.0, 0, self.cfg.eval_batch_size
        with torch.no_grad():
            for b in range(0, len(order), size):
                batch = self.collate("ce", [self.val_examples[i] for i in order[b:b + size]])
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                with self.accelerator.autocast():
                    lp = losses.token_logprobs(model, batch)
                m = batch["target_mask"]
                nll -= float(losses.masked(lp, m).sum())
                n += int(m.sum())
        model.train()
        return nll / max(1, n)

    def greedy_pass_at_1(self, model, step: int) -> dict[str, Any]:
        from ..execution import ExecConfig
        from ..execution.stage import execute
        from ..generation.generation_config import GenerationConfig
        from ..generation.stage import generate
        from ..models import LoadedModel

        probs = self.val_problems[:self.cfg.val_pass_problems]
        d = self.out / VALIDATION_DIR / checkpoint_name(step)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        m = self.accelerator.unwrap_model(model)
        m.eval()
        try:
            lm = LoadedModel(model=m, tokenizer=self.lm.tokenizer, spec=str(self.out), path=self.out,
                             is_encoder_decoder=self.lm.is_encoder_decoder)
            gcfg = GenerationConfig(model=str(self.out), num_seqs=0, greedy=True,
                                    batch_size=self.cfg.val_pass_batch_size,
                                    max_new_tokens=self.cfg.val_max_new_tokens,
                                    max_prompt_tokens=self.cfg.max_prompt_tokens,
                                    prompt_style=self.cfg.prompt_style, progress=False,
                                    device="cuda" if self.accelerator.device.type == "cuda" else "cpu")
            with torch.no_grad():
                generate(probs, d / "samples.jsonl", gcfg, model=lm)
        finally:
            m.train()
        summary = execute(probs, d / "samples.jsonl", d / "results.jsonl",
                          self.exec_config or ExecConfig(), progress=False)
        passed = summary["outcomes"].get("passed", 0)
        return {"pass@1": passed / max(1, len(probs)), "problems": len(probs),
                "outcomes": summary["outcomes"]}

    # -- saved models -----------------------------------------------------------------------------
    def save(self, model, path: Path, step: int) -> None:
        base = self.base_spec  # a sibling of the stage (``../sft``) is named from the checkpoint: it loads where it lies
        if base and base.startswith("../"):
            base = os.path.relpath(self.out.absolute().parent / base[3:], Path(path).absolute())
        save_model(model, self.lm.tokenizer, path, base_spec=base,
                   info={"stage": self.name, "mode": self.cfg.mode, "step": step})

    def load(self, model, path: Path) -> None:
        load_weights(model, path)

    def publish(self, model, step: int, selected: str) -> None:
        publish_model(model, self.lm.tokenizer, self.out, base_spec=self.base_spec,
                      info={"stage": self.name, "mode": self.cfg.mode, "step": step, "selected": selected})

    def signature(self, model) -> dict[str, Any]:
        return model_signature(model)

    def summary(self, result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
        st, cfg, secs = result.state, self.cfg, result.train_seconds
        return {
            "stage": self.name, "complete": result.complete, "steps": st.step,
            "total_steps": result.total_steps, "max_steps": result.max_steps,
            "steps_by_kind": st.steps_by_kind, "stopped_early": st.stopped_early,
            "mode": cfg.mode, "lr": cfg.learning_rate, "trainable_parameters": result.trainable_parameters,
            "data": self.data_info, "validation_examples": len(self.val_examples),
            "best": st.best, "history": st.history,
            "model": str(self.out), "selected": "best" if st.best else "last",
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "train_seconds": round(secs, 1), "wall_seconds": round(result.wall_seconds, 1),
            "tokens": st.tokens,
            "tokens_per_s": round(st.tokens / secs, 1) if secs > 0 else None,
            "seconds_per_step": round(secs / st.step, 3) if st.step else None,
            "peak_rss_mb": peak_rss_mb(),
        }, {}
