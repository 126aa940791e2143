"""The one training loop of coderl: SFT, CodeRL's RL and the critic all run on :class:`Trainer`,
on ``accelerate``. A stage supplies a :class:`~coderl.training.task.TrainingTask` (model, loss
step, validation, saving) and a :class:`~coderl.training.batches.BatchSource` (the plan of every
optimizer step); the Trainer does the rest, alike for every stage:

* **Setup**: an ``Accelerator``, the seed, the task's model, AdamW on its trainable parameters, a
  warm-up + decay schedule (linear, cosine or constant) over the source's steps.
* **The loop**: per optimizer step, this process's share of the micro-batches (``no_sync`` on all
  but its last) under autocast; clipping; the optimizer and scheduler steps; a ``step`` log record.
* **Validation** at step 0, every ``eval_every`` steps (0: every epoch's end) and at the end; the
  best publishes the model (no best: the last one, at the end); early stopping after
  ``patience`` validations without a better one.
* **Checkpoints** every ``save_every`` steps, at every validation and at the end. A rerun
  resumes from the newest one to the weights of an uninterrupted run; one under another
  fingerprint (config + data) is refused, naming the differing keys.
* **Budget**: ``max_steps`` ends the run early but validated, published and complete; the
  schedule keeps its full length, so a larger budget continues it.
* **NaN guard**: a non-finite loss or gradient norm stops training before the optimizer step,
  naming the last good checkpoint and the best model so far.
* **Log**: ``log.jsonl`` (``start`` / ``step`` / ``eval`` / ``done``), TensorBoard events in
  ``tb/``, and ``metrics.json`` (the task's summary; ``complete: true`` when done).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import ConfigError, diff
from ..io import JsonlAppender, atomic_write_text, read_jsonl, write_jsonl
from ..rundir import remove_box
from .batches import BatchSource
from .checkpoint import list_checkpoints, load_checkpoint, read_progress, save_checkpoint, set_rng_state
from .data import TrainingError
from .task import Point, RunResult, TrainingTask

LOG_FILE = "log.jsonl"            # start / step / eval / done events
METRICS_FILE = "metrics.json"     # the task's summary (complete: true when done)
FINGERPRINT_FILE = "fingerprint.json"
TB_DIR = "tb"                     # TensorBoard events
DATA_FILE = "data.jsonl"          # one line per training example (what it is, not its tokens)


@dataclass
class LoopSettings:
    """What the loop reads of a stage's config (:meth:`of` takes the fields of the same names)."""

    section: str                       # the config section, in messages ("sft.lr")
    learning_rate: float
    seed: int = 0
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_schedule: str = "linear"
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    eval_every: int = 0
    patience: int = 0
    max_steps: int | None = None
    save_every: int = 0
    keep_checkpoints: int = 1
    log_every: int = 1
    release_memory: bool = False
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    @classmethod
    def of(cls, cfg, section: str, **overrides) -> "LoopSettings":
        values = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "section" and hasattr(cfg, f.name)}
        return cls(section=section, **{**values, **overrides})


@dataclass
class TrainState:
    """The loop's counters and history (saved in every checkpoint)."""

    step: int = 0                      # optimizer steps done
    steps_by_kind: dict[str, int] = field(default_factory=dict)
    epochs: int = 0                    # passes over the data finished
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])  # this epoch: sum x items, items
    history: list[dict] = field(default_factory=list)   # validations
    best: dict | None = None           # the best validation's record, with its "score"
    best_keep: Any = None              # what the task keeps of it
    evals_since_best: int = 0
    tokens: int = 0
    seconds: float = 0.0               # training time before this process
    stopped_early: bool = False


def lr_lambda(kind: str, total: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warm-up, then linear decay, cosine or constant."""
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


def make_accelerator(settings: LoopSettings):
    """An Accelerator for ``settings``; accelerate's per-process state, left by an earlier stage with
    another precision or device, is reset in a single-process run (else it would refuse)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # the scheduler steps once per optimizer step (by default N processes would run it N times too fast)
    kw = dict(cpu=settings.device == "cpu", mixed_precision=settings.mixed_precision,
              step_scheduler_with_optimizer=False)
    try:
        return Accelerator(**kw)
    except ValueError as e:
        if "already been initialized" not in str(e) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kw)


class Trainer:
    """One training run of ``task`` on ``source``'s batches into ``out``; ``fingerprint``: what a
    resume needs unchanged; ``data_records``: ``data.jsonl``; ``on_step(step)``: after each step."""

    def __init__(self, task: TrainingTask, source: BatchSource, settings: LoopSettings, *, out: Path,
                 fingerprint: dict[str, Any], data_records: Sequence[dict] = (),
                 on_step: Callable[[int], None] | None = None, echo: Callable[[str], None] = print):
        self.task, self.source, self.settings = task, source, settings
        self.out, self.fp, self.data_records = Path(out), fingerprint, data_records
        self.on_step, self.echo = on_step, echo
        # set by setup(); total: the source's optimizer steps, limit: where this run stops
        self.accelerator = self.model = self.optimizer = self.scheduler = self.release_memory = None
        self.params: list[torch.nn.Parameter] = []
        self.n_trainable = self.total = self.limit = 0
        self.t_start = self.t_train = 0.0  # t_train: when this process started training
        self.state, self.resumed, self.rng = TrainState(), False, None  # resume()
        self.log: JsonlAppender | None = None
        self.tb: Any = None

    def run(self) -> dict[str, Any]:
        """Train (or resume) to the end or the budget; returns the task's summary."""
        done = self.check_fingerprint()
        if done is not None:
            self.echo(f"coderl {self.task.name}: already complete in {self.out} (delete it or --fresh "
                      "to train again)")
            return done
        self.setup()
        self.resume()
        self.open_run()
        try:
            self.train()
        finally:
            self.close_run()
        return self.finish()

    # -- setup ------------------------------------------------------------------------------------
    def check_fingerprint(self) -> dict[str, Any] | None:
        """Refuse another run's directory; the stored summary when complete; None to train."""
        f = self.out / FINGERPRINT_FILE
        if f.is_file():
            old = json.loads(f.read_text())
            if old != self.fp:
                changes = diff(old.get("config", {}), self.fp["config"]) + [
                    f"{k}: {old.get(k)} -> {self.fp.get(k)}" for k in sorted(set(old) | set(self.fp))
                    if k != "config" and old.get(k) != self.fp.get(k)]
                raise ConfigError(f"{self.out}: holds a {self.task.name} run under another config or "
                                  f"other data; refusing to resume it. Differences: {'; '.join(changes)}. "
                                  "Start fresh (--fresh) or use another run directory.")
            done = finished_summary(self.out, self.settings.max_steps)
            if done is not None:
                return done
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, json.dumps(self.fp, indent=1, sort_keys=True) + "\n")
        if self.data_records:
            write_jsonl(self.out / DATA_FILE, self.data_records, default=str)
        return None

    def setup(self) -> None:
        """The accelerator, the seed, the model, the optimizer and the schedule."""
        from accelerate.utils import set_seed

        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        if s.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{s.section}.device: cuda requested but torch sees no GPU")
        self.t_start = time.time()
        self.release_memory = _glibc_release_memory() if s.release_memory else None
        self.accelerator = make_accelerator(s)
        set_seed(s.seed)
        self.source.bind(s.grad_accum * self.accelerator.num_processes)
        self.total = len(self.source)
        if not self.total:
            raise TrainingError(f"coderl {self.task.name}: nothing to train (no optimizer steps)")
        self.limit = min(self.total, s.max_steps) if s.max_steps else self.total
        model = self.task.build(self.accelerator)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in self.params)
        optimizer = torch.optim.AdamW(self.params, lr=s.learning_rate, weight_decay=s.weight_decay)
        # the schedule spans every step of the source, max_steps or not (a larger budget continues)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(s.lr_schedule, self.total, int(s.warmup_ratio * self.total)))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)

    def resume(self) -> None:
        """Continue from the newest checkpoint, or start afresh (an earlier attempt's log removed)."""
        cks = list_checkpoints(self.out)
        self.resumed = bool(cks)
        acc = self.accelerator
        if not cks:
            if acc.is_main_process:  # (the others wait: the main process opens the log next)
                for name in (LOG_FILE, TB_DIR, *self.task.stale_outputs):
                    remove_box(self.out / name)
            acc.wait_for_everyone()
            return
        ck, model = cks[-1], self.unwrapped()
        saved = load_checkpoint(ck, partial(self.task.load, model), optimizer=self.optimizer,
                                scheduler=self.scheduler, signature=self.task.signature(model))
        try:
            self.state = TrainState(**saved["trainer"])
        except TypeError:
            raise TrainingError(f"{ck}: written by another version of the trainer; it cannot be "
                                "resumed. Start fresh (--fresh).") from None
        self.source.load_state_dict(saved.get("source") or {})
        self.rng = saved["rng"]
        self.echo(f"coderl {self.task.name}: resuming from {ck.name} in {ck.parent} (step "
                  f"{self.state.step} of {self.total})")
        if acc.is_main_process:
            _trim_log(self.out / LOG_FILE, self.state.step)
        acc.wait_for_everyone()

    def open_run(self) -> None:
        """Start the training clock; open the log and TensorBoard (main process)."""
        self.t_train = time.time()
        if not self.accelerator.is_main_process:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.out / TB_DIR), purge_step=self.state.step + 1 if self.resumed else None)
        self.log = JsonlAppender(self.out / LOG_FILE)
        if not self.resumed:
            self.log.write({"event": "start", "stage": self.task.name, "total_steps": self.total,
                            "trainable_parameters": self.n_trainable, **self.task.info})

    def close_run(self) -> None:
        if self.tb is not None:
            self.tb.close()  # (flushes)
        if self.log is not None:
            self.log.close()

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> None:
        """Optimizer steps from where the run stands to its limit (or an early stop)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.limit, initial=self.state.step, unit="step", desc=self.task.name, dynamic_ncols=True,
                   disable=not self.settings.progress or not self.accelerator.is_local_main_process)
        if self.rng is not None:
            set_rng_state(self.rng)  # where the checkpoint left it: the next step draws what it drew
        try:
            if self.state.step == 0 and not self.state.history:
                self.validate(0)
            while self.state.step < self.limit and not self.state.stopped_early:
                kind, means = self.optimizer_step(self.state.step)
                bar.update(1)
                bar.set_postfix(kind=kind, loss=f"{means.get('loss', float('nan')):.4f}")
                self.after_step()
        finally:
            bar.close()

    def optimizer_step(self, s: int) -> tuple[str, dict[str, float]]:
        """Run and log step ``s``; its kind and mean statistics."""
        t0 = time.time()
        plan = self.source.step(s)
        acc = self.accelerator
        mine = plan.micro_batches[acc.process_index::acc.num_processes]
        # gradients are averaged over processes: dividing by the plan's micro-batches per process
        # weighs every micro-batch alike when the shares are uneven
        share = len(plan.micro_batches) / acc.num_processes
        sums: dict[str, float] = {}
        tokens = 0
        for i, items in enumerate(mine):
            stats, n = self.micro_step(s, plan.kind, items, last=i == len(mine) - 1, share=share)
            tokens += n
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        if not mine:  # fewer micro-batches than processes: take part in the all-reduce with nothing
            self.micro_step(s, plan.kind, plan.micro_batches[0], last=True, share=share, weight=0.0)
        gnorm = self.gradient_norm()
        if not torch.isfinite(torch.as_tensor(gnorm)).all():
            self.stop_non_finite("non-finite gradient norm", s + 1, plan.kind, mine[-1])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.release_memory is not None:
            self.release_memory()
        st = self.state
        st.step = s + 1
        st.steps_by_kind[plan.kind] = st.steps_by_kind.get(plan.kind, 0) + 1
        st.tokens += tokens
        means = {k: v / len(mine) for k, v in sums.items()} if mine else {}
        self.log_step(plan.kind, means, gnorm, tokens, time.time() - t0)
        return plan.kind, means

    def micro_step(self, s: int, kind: str, items: list, *, last: bool, share: float,
                   weight: float = 1.0) -> tuple[dict[str, float], int]:
        """Forward and backward of a micro-batch (synced on the ``last``); its stats and tokens."""
        from accelerate.utils import send_to_device

        acc = self.accelerator
        batch = send_to_device(self.task.collate(kind, items), acc.device)
        with contextlib.nullcontext() if last else acc.no_sync(self.model):
            with acc.autocast():
                loss, stats = self.task.loss(self.model, kind, batch)
            finite = bool(torch.isfinite(loss.detach()).all())
            if acc.num_processes > 1:  # every process stops, not one (the others would wait forever)
                finite = bool(acc.gather(torch.tensor([finite], device=acc.device)).all())
            if not finite:
                self.stop_non_finite(f"non-finite loss ({float(loss.detach())})", s + 1, kind, items)
            acc.backward(loss * (weight / share))
        if not weight:
            return {}, 0
        value = float(loss.detach())
        self.state.epoch_loss[0] += value * len(items)
        self.state.epoch_loss[1] += len(items)
        return {"loss": value, **stats}, self.task.num_tokens(batch)

    def gradient_norm(self):
        """Clip to ``max_grad_norm`` (0: no clipping); the norm before clipping."""
        if self.settings.max_grad_norm > 0:
            return self.accelerator.clip_grad_norm_(self.params, self.settings.max_grad_norm)
        norms = [p.grad.detach().norm() for p in self.params if p.grad is not None]
        return torch.norm(torch.stack(norms)) if norms else torch.zeros(())

    def log_step(self, kind: str, means: dict[str, float], gnorm, tokens: int, seconds: float) -> None:
        step = self.state.step
        if self.log is None or (step % self.settings.log_every and step != self.limit):
            return
        lr = self.scheduler.get_last_lr()[0]
        self.log.write({"event": "step", "step": step, "kind": kind,
                        **{k: round(v, 6) for k, v in means.items()}, "lr": lr,
                        "grad_norm": round(float(gnorm), 6), "tokens": tokens, "seconds": round(seconds, 3)})
        for k, v in means.items():
            self.tb.add_scalar(f"train/{kind}_{k}" if k == "loss" else f"train/{k}", v, step)
        self.tb.add_scalar("train/lr", lr, step)

    def after_step(self) -> None:
        """Validation, early stopping and checkpoints after an optimizer step."""
        st, s = self.state, self.settings
        at_end = st.step >= self.limit            # the data's end, or the budget (max_steps)
        epoch_end = self.source.ends_epoch(st.step - 1)
        st.epochs += epoch_end
        due = at_end or (s.eval_every and st.step % s.eval_every == 0) or (not s.eval_every and epoch_end)
        evaluated = bool(due) and self.validate(st.step, at_end=at_end, epoch_end=epoch_end)
        if evaluated and s.patience and st.evals_since_best >= s.patience:
            st.stopped_early = True
            self.echo(f"coderl {self.task.name}: early stop at step {st.step} ({s.patience} "
                      "validations without a better model)")
        if epoch_end:
            st.epoch_loss = [0.0, 0.0]
        if at_end or evaluated or st.stopped_early or (s.save_every and st.step % s.save_every == 0):
            self.save()
        if self.on_step is not None:
            self.on_step(st.step)

    # -- validation -------------------------------------------------------------------------------
    def validate(self, step: int, *, at_end: bool = False, epoch_end: bool = False) -> bool:
        """The task's validation at ``step``, logged (False: nothing to validate); the best published."""
        st = self.state
        loss_sum, items = st.epoch_loss
        point = Point(step=step, index=len(st.history), at_end=at_end, train_loss=loss_sum / max(1, items),
                      epoch=st.epochs if epoch_end or step == 0 else st.epochs + 1)
        v = self.task.validate(self.model, point)
        if v is None:
            return False
        is_best = step > 0 and v.score is not None and (st.best is None or v.score > st.best["score"])
        entry = {**v.entry, "best": is_best}
        if step > 0 and v.score is not None:
            if is_best:
                st.best, st.best_keep, st.evals_since_best = {**v.best, "score": v.score}, v.keep, 0
                if self.accelerator.is_main_process:
                    self.task.publish(self.unwrapped(), step, "best")
            else:
                st.evals_since_best += 1
        st.history.append(entry)
        if self.log is not None:
            self.log.write({"event": "eval", **entry})
            for tag, value in v.scalars.items():
                self.tb.add_scalar(tag, value, step)
        self.echo(f"coderl {self.task.name}: {v.shown}{' (best)' if is_best else ''}")
        return True

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> None:
        """A resumable checkpoint of the current step (main process), then every process waits."""
        st = self.state
        if self.accelerator.is_main_process:
            model = self.unwrapped()
            save_checkpoint(self.out, st.step, partial(self.task.save, model, step=st.step),
                            optimizer=self.optimizer, scheduler=self.scheduler,
                            trainer={**asdict(st), "seconds": st.seconds + time.time() - self.t_train},
                            progress={"step": st.step, "total_steps": self.total,
                                      "stopped_early": st.stopped_early},
                            keep=self.settings.keep_checkpoints, signature=self.task.signature(model),
                            source=self.source.state_dict())
        self.accelerator.wait_for_everyone()

    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def stop_non_finite(self, what: str, step: int, kind: str, items: list) -> None:
        """The NaN guard: stop before anything of this step is applied, naming what is left."""
        cks = list_checkpoints(self.out)
        where = (f"the last good checkpoint is {cks[-1]} (step {int(cks[-1].name.split('-')[1])})" if cks
                 else "no checkpoint had been written yet (nothing was saved from this run)")
        best = (f"; the best model so far (step {self.state.best['step']}) is in {self.task.published}"
                if self.state.best else "")
        pids = sorted({str(getattr(x, "problem_id", "?")) for x in items})
        s = self.settings
        raise TrainingError(f"coderl {self.task.name}: {what} at step {step} (a {kind} step on problems "
                            f"{', '.join(pids[:4])}); training stopped, nothing of this step was "
                            f"applied. {where[0].upper() + where[1:]}{best}. Lower the learning "
                            f"rate ({s.section}.lr, now {s.learning_rate}) and start again with "
                            "--fresh (or resume from the checkpoint under the same settings).")

    # -- the end ----------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Publish the last model when no validation chose one, write ``metrics.json``; the summary."""
        st = self.state
        complete = st.step >= self.limit or st.stopped_early
        main = self.accelerator.is_main_process
        train_seconds = st.seconds + time.time() - self.t_train
        if complete and main and st.best is None:
            self.task.publish(self.unwrapped(), st.step, "last")
        cks = list_checkpoints(self.out)
        summary, extra = self.task.summary(RunResult(
            complete=complete, state=st, total_steps=self.total, max_steps=self.settings.max_steps,
            trainable_parameters=self.n_trainable, train_seconds=train_seconds,
            wall_seconds=time.time() - self.t_start, checkpoint=cks[-1] if cks else None, main=main))
        if main:
            atomic_write_text(self.out / METRICS_FILE, json.dumps(
                {"complete": complete, "summary": summary, **extra}, indent=1, default=str) + "\n")
            if complete:
                with JsonlAppender(self.out / LOG_FILE) as lg:
                    lg.write({"event": "done", "steps": st.step, "best": st.best, "seconds": round(train_seconds, 1)})
        return summary


def finished_summary(out_dir: str | Path, max_steps: int | None) -> dict[str, Any] | None:
    """The stored summary of a run in ``out_dir`` complete for the budget ``max_steps``; else None."""
    out = Path(out_dir)
    try:
        m = json.loads((out / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not m.get("complete"):
        return None
    summary = m.get("summary") or {}
    cks = list_checkpoints(out)
    p = read_progress(cks[-1]) if cks else None
    if p is None:  # no checkpoint left, or one written before progress.json: the summary says
        p = {"step": summary.get("steps", 0), "stopped_early": summary.get("stopped_early", False),
             "total_steps": summary.get("total_steps", summary.get("steps", 0))}
    limit = min(p["total_steps"], max_steps) if max_steps else p["total_steps"]
    return summary if p["stopped_early"] or p["step"] >= limit else None


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _trim_log(path: Path, step: int) -> None:
    """Cut the log back to the checkpoint being resumed (a killed run may have logged past it)."""
    if not path.is_file():
        return
    keep = [r for r in read_jsonl(path, tolerate_torn_tail=True) if r.get("event") != "done"
            and not (r.get("event") in ("step", "eval") and r.get("step", 0) > step)]
    write_jsonl(path, keep)


def _glibc_release_memory():
    """Linux/glibc: allocations of 1 MB and more served by mmap (returned to the system when
    freed), and ``malloc_trim`` to call after each step; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(-3, 1 << 20) != 1:  # M_MMAP_THRESHOLD
            return None
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
