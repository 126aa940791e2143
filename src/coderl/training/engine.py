"""The training loop both actor trainers run (SFT: cross-entropy steps only; RL: RL steps
alternating with cross-entropy steps), on ``accelerate``.

* **Set-up**: the model (LoRA adapters through peft, or every weight), AdamW, a warm-up + decay
  schedule and a data loader of micro-batches, prepared by an ``Accelerator`` (CPU, one GPU, or
  a launch config); gradient accumulation (``no_sync`` on all but the last micro-batch of a
  step) and clipping; gradient checkpointing as an option.
* **Data order** is a pure function of the seed and the step: stream ``X``'s micro-batch ``k``
  is a slice of a permutation seeded by ``(seed, stream, k // batches_per_epoch)``, and optimizer
  step ``s`` of kind ``X`` (its ``j``-th of that kind) reads micro-batches ``j*G .. j*G+G-1``
  (``G`` = grad_accum x processes). A resumed run therefore reads exactly the batches an
  uninterrupted run would; with the optimizer, scheduler and RNG states restored it ends with the
  same weights.
* **Validation**: the loss on the gold programs of the validation problems every ``eval_every``
  steps (or at every epoch's end) and at the end, optionally a greedy pass@1 (generate +
  execute) on a few of them; the best model (by loss or pass@1) is published at the top of the
  stage directory as it improves (``<run>/sft/``, loadable by ``load_model``); early stopping
  after ``patience`` validations without a better one.
* **Checkpoints** (:mod:`coderl.training.checkpoint`) every ``save_every`` steps, at every
  validation and at the end; a rerun resumes from the newest (the log is cut back to it) and is
  refused under a different fingerprint (config + data).
* **NaN**: a non-finite loss or gradient norm stops training before the optimizer step; the
  error names the last good checkpoint (left as it was) and the best model so far.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import math
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import ConfigError, diff
from ..io import JsonlAppender, atomic_write_text, read_jsonl
from . import losses
from .base_config import TrainerConfig
from .checkpoint import (INFO_FILE, checkpoint_name, list_checkpoints, load_checkpoint, publish_model,
                         save_checkpoint, set_rng_state)
from .data import Example, TrainingError

LOG_FILE = "log.jsonl"            # start / step / eval / done events
METRICS_FILE = "metrics.json"     # the summary and the validation history (complete: true when done)
FINGERPRINT_FILE = "fingerprint.json"
TB_DIR = "tb"                     # TensorBoard events
VALIDATION_DIR = "validation"     # greedy pass@1 samples and results, per validation step
DATA_FILE = "data.jsonl"          # one line per training example (what it is, not its tokens)

LossFn = Callable[["Trainer", str, dict], tuple[torch.Tensor, dict[str, float]]]


class MicroBatches:
    """Micro-batch ``k`` of a stream of ``n`` examples: epochs of seeded permutations."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = max(1, math.ceil(n / batch_size))
        self._epoch, self._perm = -1, []

    def __call__(self, k: int) -> list[int]:
        epoch, pos = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]


@dataclass
class TrainState:
    step: int = 0                      # optimizer steps done
    steps_by_kind: dict[str, int] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)   # validations
    best: dict | None = None           # {"step", "loss", "pass@1", "score"}
    evals_since_best: int = 0
    tokens: int = 0
    seconds: float = 0.0               # training time before this process
    stopped_early: bool = False


def _schedule_fn(kind: str, total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        frac = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        return max(0.0, 1.0 - frac)
    return f


def _glibc_release_memory():
    """Linux/glibc: serve allocations of 1 MB and more with mmap (returned to the system when
    freed; glibc's default threshold grows to 32 MB and keeps freed activations in the heap) and
    return ``malloc_trim`` to call after each step; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(-3, 1 << 20) != 1:  # M_MMAP_THRESHOLD
            return None
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None


def adapter_base_spec(spec: str, out: Path | None = None) -> str:
    """The ``base_model_name_or_path`` a saved adapter carries: a known name as it is; a model of
    the same run directory (``rl/`` trained on ``sft/``) relative to the adapter (``../sft``), so
    a moved or copied run loads its own; any other path made absolute (``load_model`` finds it
    from any working directory)."""
    p = Path(str(spec)).expanduser()
    if out is not None and p.exists() and p.absolute().parent == Path(out).absolute().parent:
        return f"../{p.name}"
    return str(p.resolve()) if p.exists() else str(spec)


class Trainer:
    """One training run of an actor stage (see the module docstring)."""

    def __init__(self, *, stage: str, out: Path, cfg: TrainerConfig, lm, base_spec: str,
                 streams: dict[str, list[Example]], primary: str,
                 kinds: Callable[[int], list[str]], loss_fn: LossFn, val_examples: list[Example], val_problems: Sequence,
                 fingerprint: dict[str, Any], data_info: dict[str, Any], needs_reference: bool = False,
                 progress: bool = True, on_step: Callable[[int], None] | None = None,
                 echo: Callable[[str], None] = print, exec_config: Any = None,
                 data_records: Sequence[dict] = ()):
        self.stage, self.out, self.cfg, self.lm = stage, Path(out), cfg, lm
        self.base_spec, self.streams, self.primary, self.kinds_fn = base_spec, streams, primary, kinds
        self.kinds: list[str] = []
        self.data_records = data_records
        self.loss_fn, self.val_examples, self.val_problems = loss_fn, val_examples, list(val_problems)
        self.fp, self.data_info, self.needs_reference = fingerprint, data_info, needs_reference
        self.progress, self.on_step, self.echo, self.exec_config = progress, on_step, echo, exec_config
        self.ref_model = None

    # -- set-up ---------------------------------------------------------------------------------
    def _check_fingerprint(self) -> dict | None:
        """None to train; the stored summary when the run is already complete."""
        f = self.out / FINGERPRINT_FILE
        if f.is_file():
            old = json.loads(f.read_text())
            if old != self.fp:
                changes = diff(old.get("config", {}), self.fp["config"])
                for k in sorted(set(old) | set(self.fp)):
                    if k != "config" and old.get(k) != self.fp.get(k):
                        changes.append(f"{k}: {old.get(k)} -> {self.fp.get(k)}")
                raise ConfigError(f"{self.out}: holds a {self.stage} run under other settings; refusing "
                                  f"to resume it. Differences: {'; '.join(changes)}. Start fresh "
                                  "(--fresh) or use another run directory.")
            m = self.out / METRICS_FILE
            if m.is_file():
                metrics = json.loads(m.read_text())
                if metrics.get("complete") and not wants_more_steps(metrics["summary"], self.cfg):
                    return metrics["summary"]
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, json.dumps(self.fp, indent=1, sort_keys=True) + "\n")
        if self.data_records:
            atomic_write_text(self.out / DATA_FILE, "".join(json.dumps(r, default=str) + "\n"
                                                            for r in self.data_records))
        return None

    def _build_model(self, accelerator):
        cfg = self.cfg
        model = self.lm.model
        model.train()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if self.needs_reference and cfg.mode == "full":
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
        if cfg.mode == "lora":
            from peft import LoraConfig, TaskType, get_peft_model

            targets = cfg.lora_targets
            targets = targets[0] if targets == ["all-linear"] else list(targets)
            task = TaskType.SEQ_2_SEQ_LM if self.lm.is_encoder_decoder else TaskType.CAUSAL_LM
            try:
                model = get_peft_model(model, LoraConfig(
                    r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    target_modules=targets, bias="none", task_type=task))
            except ValueError as e:
                raise ConfigError(f"{self.stage}.lora_targets: LoRA on {type(model).__name__}: {e}") from None
            for c in model.peft_config.values():
                c.base_model_name_or_path = self.base_spec
        return model

    def _plan(self, world: int) -> list[tuple[str, list[list[int]]]]:
        """For each optimizer step: its kind and the example indices of its micro-batches."""
        G = self.cfg.grad_accum * world
        mbs = {k: MicroBatches(len(ex), self.cfg.batch_size, self.cfg.seed + 7919 * i)
               for i, (k, ex) in enumerate(self.streams.items())}
        used = {k: 0 for k in self.streams}
        plan = []
        for kind in self.kinds:
            j = used[kind]
            plan.append((kind, [mbs[kind](k) for k in range(j * G, (j + 1) * G)]))
            used[kind] += 1
        return plan

    def _epoch_ends(self, world: int) -> set[int]:
        """Steps after which the primary stream finished an epoch."""
        G = self.cfg.grad_accum * world
        per_epoch = MicroBatches(len(self.streams[self.primary]), self.cfg.batch_size, 0).per_epoch
        ends, j = set(), 0
        for s, kind in enumerate(self.kinds):
            if kind != self.primary:
                continue
            if ((j + 1) * G) // per_epoch > (j * G) // per_epoch:
                ends.add(s + 1)
            j += 1
        return ends

    def collate(self, examples: Sequence[Example]) -> dict[str, Any]:
        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        start = getattr(self.lm.model.config, "decoder_start_token_id", None)
        return losses.collate(examples, pad_id=pad, is_encoder_decoder=self.lm.is_encoder_decoder,
                              decoder_start_id=start)

    # -- reference model (KL) -------------------------------------------------------------------
    def reference_logprobs(self, batch: dict) -> torch.Tensor:
        """log-probs of the targets under the starting model (no gradient)."""
        with torch.no_grad():
            if self.ref_model is not None:
                return losses.token_logprobs(self.ref_model, batch)
            m = self.accelerator.unwrap_model(self.model)
            with m.disable_adapter():
                return losses.token_logprobs(self.model, batch)

    # -- validation -----------------------------------------------------------------------------
    def validation_loss(self) -> float | None:
        if not self.val_examples:
            return None
        model = self.model
        model.eval()
        order = sorted(range(len(self.val_examples)), key=lambda i: self.val_examples[i].num_tokens)
        nll, n = 0.0, 0
        with torch.no_grad():
            for b in range(0, len(order), self.cfg.eval_batch_size):
                batch = self.collate([self.val_examples[i] for i in order[b:b + self.cfg.eval_batch_size]])
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                with self.accelerator.autocast():
                    lp = losses.token_logprobs(model, batch)
                m = batch["target_mask"]
                nll -= float(torch.where(m, lp, torch.zeros((), device=lp.device)).sum())
                n += int(m.sum())
        model.train()
        return nll / max(1, n)

    def greedy_pass_at_1(self, step: int) -> dict[str, Any]:
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
        m = self.accelerator.unwrap_model(self.model)
        m.eval()
        try:
            lm = LoadedModel(model=m, tokenizer=self.lm.tokenizer, spec=str(self.out), path=self.out,
                             is_encoder_decoder=self.lm.is_encoder_decoder)
            dev = self.accelerator.device
            gcfg = GenerationConfig(model=str(self.out), num_seqs=0, greedy=True,
                                    batch_size=self.cfg.val_pass_batch_size,
                                    max_new_tokens=self.cfg.val_max_new_tokens,
                                    max_prompt_tokens=self.cfg.max_prompt_tokens,
                                    prompt_style=self.cfg.prompt_style, progress=False,
                                    device="cuda" if dev.type == "cuda" else "cpu")
            with torch.no_grad():
                generate(probs, d / "samples.jsonl", gcfg, model=lm)
        finally:
            m.train()
        summary = execute(probs, d / "samples.jsonl", d / "results.jsonl",
                          self.exec_config or ExecConfig(), progress=False)
        passed = summary["outcomes"].get("passed", 0)
        return {"pass@1": passed / max(1, len(probs)), "problems": len(probs),
                "outcomes": summary["outcomes"]}

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        cfg = self.cfg
        done = self._check_fingerprint()
        if done is not None:
            self.echo(f"coderl {self.stage}: already complete in {self.out} (delete it or --fresh to "
                      "train again)")
            return done
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{self.stage}.device: cuda requested but torch sees no GPU")
        t_start = time.time()
        trim = _glibc_release_memory() if cfg.release_memory else None
        accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
        self.accelerator = accelerator
        set_seed(cfg.seed)
        world = accelerator.num_processes
        G = cfg.grad_accum * world
        self.kinds = self.kinds_fn(G)
        if not self.kinds:
            raise TrainingError(f"coderl {self.stage}: nothing to train (no optimizer steps)")
        model = self._build_model(accelerator)
        params = [p for p in model.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        total = len(self.kinds)
        # max_steps shortens the run (the schedule keeps the full length, so that a rerun with a
        # larger budget continues it unchanged); the run is complete at the budget
        limit = min(total, cfg.max_steps) if cfg.max_steps else total
        warmup = int(cfg.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule_fn(cfg.lr_schedule, total, warmup))
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.model = model

        # -- resume -------------------------------------------------------------------------------
        state, rng = TrainState(), None
        cks = list_checkpoints(self.out)
        if cks:
            saved = load_checkpoint(cks[-1], accelerator.unwrap_model(model), optimizer=optimizer,
                                    scheduler=scheduler)
            state = TrainState(**saved["trainer"])
            rng = saved["rng"]
            self.echo(f"coderl {self.stage}: resuming from {cks[-1]} (step {state.step} of {total})")
            _trim_log(self.out / LOG_FILE, state.step)
        else:
            for stale in (self.out / LOG_FILE, self.out / TB_DIR, self.out / VALIDATION_DIR):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
        plan = self._plan(world)
        epoch_ends = self._epoch_ends(world)
        items = [(s, kind, pos, idx) for s, (kind, mb) in enumerate(plan) if s >= state.step
                 for pos, idx in enumerate(mb)]
        loader = torch.utils.data.DataLoader(items, batch_size=1, shuffle=False,
                                             collate_fn=lambda xs: self._micro_batch(xs[0]),
                                             generator=torch.Generator().manual_seed(cfg.seed))
        loader = accelerator.prepare(loader)

        from torch.utils.tensorboard import SummaryWriter

        main = accelerator.is_main_process
        tb = SummaryWriter(str(self.out / TB_DIR), purge_step=state.step + 1 if cks else None) if main else None
        log = JsonlAppender(self.out / LOG_FILE) if main else None
        if log is not None and not cks:
            log.write({"event": "start", "stage": self.stage, "total_steps": total,
                       "trainable_parameters": n_trainable, "data": self.data_info})
        info = {"stage": self.stage, "mode": cfg.mode}

        def save(step: int) -> None:
            if main:
                save_checkpoint(self.out, step, accelerator.unwrap_model(model), self.lm.tokenizer,
                                optimizer=optimizer, scheduler=scheduler,
                                trainer={**asdict(state), "seconds": state.seconds + time.time() - t_train},
                                base_spec=self.base_spec, keep=cfg.keep_checkpoints, info=info)
            accelerator.wait_for_everyone()

        def validate(step: int) -> None:
            vloss = self.validation_loss()
            entry: dict[str, Any] = {"step": step, "loss": None if vloss is None else round(vloss, 6)}
            if cfg.val_pass_every and self.val_problems:
                n_val = len(state.history)
                if n_val % cfg.val_pass_every == 0 or step == limit:
                    entry.update(self.greedy_pass_at_1(step))
            score = None
            if cfg.best_metric == "pass@1" and entry.get("pass@1") is not None:
                score = [entry["pass@1"], -(vloss or 0.0)]
            elif cfg.best_metric == "loss" and vloss is not None:
                score = [-vloss]
            is_best = step > 0 and score is not None and (state.best is None or score > state.best["score"])
            entry["best"] = is_best
            if step > 0 and score is not None:
                if is_best:
                    state.best = {"step": step, "loss": entry["loss"], "pass@1": entry.get("pass@1"),
                                  "score": score}
                    state.evals_since_best = 0
                    if main:
                        publish_model(accelerator.unwrap_model(model), self.lm.tokenizer, self.out,
                                      base_spec=self.base_spec, info={**info, "step": step, "selected": "best"})
                else:
                    state.evals_since_best += 1
            state.history.append(entry)
            if main:
                log.write({"event": "eval", **entry})
                for k in ("loss", "pass@1"):
                    if entry.get(k) is not None:
                        tb.add_scalar(f"validation/{k}", entry[k], step)
            shown = f"validation at step {step}: loss {entry['loss']}"
            if entry.get("pass@1") is not None:
                shown += f", greedy pass@1 {entry['pass@1']:.3f} ({entry['problems']} problems)"
            self.echo(f"coderl {self.stage}: {shown}{' (best)' if is_best else ''}")

        # -- the loop -----------------------------------------------------------------------------
        t_train = time.time()
        bar = tqdm(total=limit, initial=state.step, unit="step", desc=self.stage,
                   disable=not self.progress or not accelerator.is_local_main_process, dynamic_ncols=True)
        it = iter(loader)
        first = next(it, None)  # the loader is started (and draws what it draws) before the RNG
        if rng is not None:     # states of a resumed run are restored, as in the first run
            set_rng_state(rng)
        has_val = bool(self.val_examples) or bool(cfg.val_pass_every and self.val_problems)
        try:
            if has_val and state.step == 0 and not state.history:
                validate(0)
            acc: dict[str, float] = {}
            n_mb = 0
            t_step = time.time()
            tokens = 0
            stop = state.step >= limit
            while not stop:
                batch, first = (first, None) if first is not None else (next(it, None), None)
                if batch is None:
                    break
                step, kind, pos = batch.pop("_step"), batch.pop("_kind"), batch.pop("_pos")
                pids = batch.pop("_problems")
                ends = pos + world >= G
                ctx = accelerator.no_sync(model) if not ends else contextlib.nullcontext()
                with ctx:
                    with accelerator.autocast():
                        loss, stats = self.loss_fn(self, kind, batch)
                    if not torch.isfinite(loss.detach()).all():
                        self._nan(f"non-finite loss ({float(loss.detach())})", step + 1, kind, pids, state)
                    accelerator.backward(loss / cfg.grad_accum)
                tokens += losses.num_tokens(batch)
                n_mb += 1
                for k, v in {"loss": float(loss.detach()), **stats}.items():
                    acc[k] = acc.get(k, 0.0) + v
                if not ends:
                    continue
                gnorm = None
                if cfg.max_grad_norm > 0:
                    gnorm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                else:
                    gnorm = torch.norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
                if not torch.isfinite(torch.as_tensor(gnorm)).all():
                    self._nan("non-finite gradient norm", step + 1, kind, pids, state)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if trim is not None:
                    trim()
                state.step = step + 1
                state.steps_by_kind[kind] = state.steps_by_kind.get(kind, 0) + 1
                state.tokens += tokens
                secs = time.time() - t_step
                means = {k: v / n_mb for k, v in acc.items()}
                bar.update(1)
                bar.set_postfix(kind=kind, loss=f"{means['loss']:.4f}")
                if main and (state.step % cfg.log_every == 0 or state.step == limit):
                    lr_now = scheduler.get_last_lr()[0]
                    log.write({"event": "step", "step": state.step, "kind": kind,
                               **{k: round(v, 6) for k, v in means.items()}, "lr": lr_now,
                               "grad_norm": round(float(gnorm), 6), "tokens": tokens,
                               "seconds": round(secs, 3)})
                    for k, v in means.items():
                        tb.add_scalar(f"train/{kind}_{k}" if k == "loss" else f"train/{k}", v, state.step)
                    tb.add_scalar("train/lr", lr_now, state.step)
                acc, n_mb, tokens = {}, 0, 0
                at_end = state.step >= limit   # the data's end, or the budget (max_steps)
                evaluated = False
                if has_val and (at_end or (cfg.eval_every and state.step % cfg.eval_every == 0)
                                or (not cfg.eval_every and state.step in epoch_ends)):
                    validate(state.step)
                    evaluated = True
                    if cfg.patience and state.evals_since_best >= cfg.patience:
                        state.stopped_early = True
                        self.echo(f"coderl {self.stage}: early stop at step {state.step} "
                                  f"({cfg.patience} validations without a better model)")
                if (at_end or evaluated or state.stopped_early
                        or (cfg.save_every and state.step % cfg.save_every == 0)):
                    save(state.step)
                if self.on_step is not None:
                    self.on_step(state.step)
                stop = at_end or state.stopped_early
                t_step = time.time()  # a step's seconds: its micro-batches and optimizer step only
        finally:
            bar.close()
            if tb is not None:
                tb.flush()
                tb.close()
            if log is not None:
                log.close()

        complete = state.step >= limit or state.stopped_early
        train_seconds = state.seconds + time.time() - t_train
        if complete and main and state.best is None:
            publish_model(accelerator.unwrap_model(model), self.lm.tokenizer, self.out,
                          base_spec=self.base_spec, info={**info, "step": state.step, "selected": "last"})
        summary = {
            "stage": self.stage, "complete": complete, "steps": state.step, "total_steps": total,
            "max_steps": cfg.max_steps,
            "steps_by_kind": state.steps_by_kind, "stopped_early": state.stopped_early,
            "mode": cfg.mode, "lr": cfg.learning_rate, "trainable_parameters": n_trainable,
            "data": self.data_info, "validation_examples": len(self.val_examples),
            "best": state.best, "history": state.history,
            "model": str(self.out), "selected": "best" if state.best else "last",
            "checkpoint": str(list_checkpoints(self.out)[-1]) if list_checkpoints(self.out) else None,
            "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - t_start, 1),
            "tokens": state.tokens,
            "tokens_per_s": round(state.tokens / train_seconds, 1) if train_seconds > 0 else None,
            "seconds_per_step": round(train_seconds / state.step, 3) if state.step else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if main:
            atomic_write_text(self.out / METRICS_FILE,
                              json.dumps({"complete": complete, "summary": summary}, indent=1, default=str) + "\n")
            if complete:
                with JsonlAppender(self.out / LOG_FILE) as lg:
                    lg.write({"event": "done", "steps": state.step, "best": state.best,
                              "seconds": round(train_seconds, 1)})
        return summary

    def _micro_batch(self, item) -> dict[str, Any]:
        step, kind, pos, idx = item
        exs = [self.streams[kind][i] for i in idx]
        batch = self.collate(exs)
        batch.update(_step=step, _kind=kind, _pos=pos, _problems=sorted({e.problem_id for e in exs}))
        return batch

    def _nan(self, what: str, step: int, kind: str, pids: list[str], state: TrainState):
        cks = list_checkpoints(self.out)
        where = (f"the last good checkpoint is {cks[-1]} (step {int(cks[-1].name.split('-')[1])})" if cks
                 else "no checkpoint had been written yet (nothing was saved from this run)")
        best = (f"; the best model so far (step {state.best['step']}) is in {self.out}"
                if state.best else "")
        raise TrainingError(f"coderl {self.stage}: {what} at step {step} (a {kind} step on problems "
                            f"{', '.join(pids[:4])}); training stopped, nothing of this step was "
                            f"applied. {where[0].upper() + where[1:]}{best}. Lower the learning "
                            f"rate ({self.stage}.lr, now {self.cfg.learning_rate}) and start again "
                            "with --fresh (or resume from the checkpoint under the same settings).")


def wants_more_steps(summary: dict[str, Any], cfg) -> bool:
    """A finished run whose budget (``max_steps``) is now larger: training continues."""
    if summary.get("stopped_early"):
        return False
    limit = min(summary["total_steps"], cfg.max_steps) if cfg.max_steps else summary["total_steps"]
    return summary["steps"] < limit


def run_is_done(out_dir: Path, cfg) -> bool:
    """The stage's ``metrics.json`` says complete, for ``cfg``'s budget."""
    try:
        m = json.loads((Path(out_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(m.get("complete")) and not wants_more_steps(m.get("summary") or {"steps": 0, "total_steps": 1}, cfg)


def _trim_log(path: Path, step: int) -> None:
    """Cut the log back to what the checkpoint being resumed had written."""
    if not path.is_file():
        return
    keep = []
    for rec in read_jsonl(path, tolerate_torn_tail=True):
        if rec.get("event") in ("step", "eval") and rec.get("step", 0) > step:
            continue
        if rec.get("event") == "done":
            continue
        keep.append(rec)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def load_validation_problems(cfg: TrainerConfig, exclude: set[str]) -> list:
    """The validation problems of ``cfg`` (none without val_source), minus training problems."""
    if not cfg.val_source:
        return []
    from ..problems import load_problems

    probs = load_problems(cfg.val_source, split=cfg.val_split or None, end=cfg.val_limit or None)
    return [p for p in probs if p.id not in exclude]
