"""The ``train-critic`` stage: samples + results -> a critic in ``<run>/critic/``.

    summary = train_critic(problems, run_dir, CriticConfig(num_classes=2),
                           samples_path=run_dir / "samples.jsonl",
                           results_path=run_dir / "results.jsonl")

1. **Data** (:mod:`coderl.critic.data`): samples joined with results, gold programs labelled
   passed, greedy programs kept, split by problem; written to ``critic/data.jsonl``.
2. **Baselines** on the same held-out split: the majority class and a logistic regression on
   simple program features (:mod:`coderl.critic.features`).
3. **Features** (mode ``head``): the frozen backbone runs once over every distinct program and
   its token hidden states are cached in float16 under ``critic/features/`` (resumable, chunk by
   chunk), so that every epoch costs only the head.
4. **Training** on ``accelerate`` (model / optimizer / dataloader / scheduler prepared): AdamW,
   linear warm-up and decay, max-pooled token logits, cross-entropy (class weights optional),
   gradient accumulation and clipping; a tqdm bar with the loss (and tqdm's ETA); a JSONL log and
   TensorBoard events.
5. **Held-out metrics after every epoch** (accuracy, macro-F1, confusion matrix, AUROC and average
   precision for passed vs not), the best checkpoint kept by AUROC or loss (``critic/best/``), and
   at the end the bootstrap interval of AUROC(critic) - AUROC(feature baseline), resampling
   held-out problems. Everything lands in ``critic/metrics.json``.

Resume: a checkpoint (``critic/checkpoints/step-NNNNNN/``: the critic in Hugging Face format plus
``trainer_state.pt`` with the optimizer, scheduler, RNG states, epoch, position in the epoch's data
order and step) is written every ``save_every`` steps and at every epoch's end, atomically. A
rerun continues from the newest one and ends with the weights and metrics of an uninterrupted
run; the log is cut back to the checkpoint's step. A rerun under a different config (or other
training data) is refused, naming the differences; ``fresh=True`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import ConfigError, diff, digest, fingerprint
from ..io import JsonlAppender, atomic_write_text, read_jsonl
from ..rundir import RunDir
from .critic_config import NOT_FINGERPRINTED, CriticConfig
from .data import CriticError, Example, TrainingData, build_training_data, class_names, label, pass_class
from .features import FEATURES, FeatureBaseline, feature_matrix, majority_proba
from .metrics import bootstrap_auroc_diff, classification_metrics
from .model import CriticModel, Encoded, masked_max

CRITIC_DIR = RunDir.CRITIC            # <run>/critic/
DATA_FILE = "data.jsonl"              # the labelled, split programs
LOG_FILE = "log.jsonl"                # step / eval events
METRICS_FILE = "metrics.json"         # held-out metrics, baselines, bootstrap, history
PREDICTIONS_FILE = "val_predictions.jsonl"  # the best epoch's held-out probabilities
FINGERPRINT_FILE = "fingerprint.json"
TB_DIR = "tb"                         # TensorBoard events
FEATURES_DIR = "features"             # cached hidden states (mode head)
CHECKPOINTS_DIR = "checkpoints"       # resumable checkpoints step-NNNNNN/
BEST_DIR = "best"                     # the best critic (Hugging Face format)
STATE_FILE = "trainer_state.pt"
FEATURE_CHUNK = 256                   # programs per cached-features part file


def critic_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CRITIC_DIR


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete resumable checkpoints of a run, oldest first."""
    d = critic_dir(run_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and (p / STATE_FILE).is_file())


def resolve_checkpoint(run_dir: str | Path | None, which: str = "best") -> Path:
    """``best`` / ``last`` of ``<run>/critic/``, or a critic directory."""
    if which in ("best", "last"):
        if run_dir is None:
            raise CriticError(f"checkpoint {which!r} needs a run directory")
        if which == "best":
            p = critic_dir(run_dir) / BEST_DIR
            if not p.is_dir():
                raise CriticError(f"{p}: no best critic yet; run coderl train-critic first")
            return p
        cks = checkpoints(run_dir)
        if not cks:
            raise CriticError(f"{critic_dir(run_dir) / CHECKPOINTS_DIR}: no checkpoint yet; run "
                              "coderl train-critic first")
        return cks[-1]
    p = Path(which).expanduser()
    if not p.is_dir():
        raise CriticError(f"{p}: no such critic checkpoint directory")
    return p


class EpochBatchSampler:
    """Batches of a seeded permutation per epoch (``seed``, ``epoch``): the data order is a pure
    function of both, so a resumed run sees the batches an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for i in range(0, self.n, self.batch_size):
            yield perm[i:i + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


@dataclass
class TrainerState:
    epoch: int = 0                 # epochs finished (evaluated)
    batch_in_epoch: int = 0        # micro-batches of the current epoch consumed
    global_step: int = 0           # optimizer steps
    loss_sum: float = 0.0          # the current epoch's training loss (sum, count)
    loss_count: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None       # {"epoch", "step", "score", "validation"}
    best_probs: list[list[float]] | None = None
    best_test_probs: list[list[float]] | None = None
    seconds: float = 0.0           # training time before this process


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    s = {"python": random.getstate(), "torch": torch.get_rng_state(),
         "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in s["python"]))
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _data_digest(data: TrainingData) -> str:
    h = hashlib.sha256()
    for e in data.examples:
        h.update(f"{e.problem_id}\0{e.index}\0{e.origin}\0{e.outcome}\0{e.split}\0".encode())
        h.update(hashlib.sha1(e.program.encode()).digest())
    return h.hexdigest()[:16]


def _program_key(problem_id: str, program: str) -> str:
    return hashlib.sha1(f"{problem_id}\0{program}".encode()).hexdigest()


# -- cached features (mode head) -----------------------------------------------------------------
def _cached_features(critic: CriticModel, examples: list[Example], encs: list[Encoded], out: Path,
                     cfg: CriticConfig, progress: bool) -> list[torch.Tensor]:
    """float16 hidden states ``[n_i, d]`` of each example's program tokens, computed once per
    distinct (problem, program) and kept in ``out`` part by part (a killed run resumes)."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    have: dict[str, torch.Tensor] = {}
    parts = sorted(out.glob("part-*.pt"))
    for f in parts:
        d = torch.load(f, weights_only=True)
        have.update(zip(d["keys"], d["feats"]))
    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        first.setdefault(_program_key(e.problem_id, e.program), i)
    todo = [(k, i) for k, i in first.items() if k not in have]
    if todo:
        # problem by problem, so that a shared prompt runs once per chunk
        todo.sort(key=lambda ki: (examples[ki[1]].problem_id, ki[1]))
        bar = tqdm(total=len(first), initial=len(first) - len(todo), unit="prog", desc="critic features",
                   disable=not progress, dynamic_ncols=True)
        n_part = len(parts)
        for c in range(0, len(todo), FEATURE_CHUNK):
            chunk = todo[c:c + FEATURE_CHUNK]
            hs = critic.program_hidden([encs[i] for _, i in chunk], batch_size=cfg.eval_batch_size,
                                       share_prompt=cfg.share_prompt, progress=bar.update)
            feats = [h.to(torch.float16).contiguous() for h in hs]
            keys = [k for k, _ in chunk]
            tmp = out / f".part-{n_part:05d}.pt.tmp"
            torch.save({"keys": keys, "feats": feats}, tmp)
            os.replace(tmp, out / f"part-{n_part:05d}.pt")
            n_part += 1
            have.update(zip(keys, feats))
        bar.close()
    return [have[_program_key(e.problem_id, e.program)] for e in examples]


def _pad_feats(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(f.shape[0] for f in feats)
    d = feats[0].shape[1]
    x = torch.zeros((len(feats), L, d), dtype=torch.float32)
    m = torch.zeros((len(feats), L), dtype=torch.bool)
    for i, f in enumerate(feats):
        x[i, :f.shape[0]] = f.float()
        m[i, :f.shape[0]] = True
    return x, m


# -- the stage ---------------------------------------------------------------------------------------
def train_critic(problems, run_dir: str | Path, cfg: CriticConfig, *, samples_path: str | Path,
                 results_path: str | Path, progress: bool | None = None, fresh: bool = False,
                 on_step: Callable[[int], None] | None = None,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the critic of ``run_dir`` on ``samples_path`` + ``results_path`` (see the module
    docstring); returns the summary (also in ``critic/metrics.json``). ``on_step(step)`` is
    called after every optimizer step (tests interrupt training there)."""
    from tqdm.auto import tqdm

    progress = cfg.progress if progress is None else progress
    t_start = time.time()
    out = critic_dir(run_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("critic.device: cuda requested but torch sees no GPU")

    data = build_training_data(problems, samples_path, results_path, include_gold=cfg.include_gold,
                               gold_in_validation=cfg.gold_in_validation, val_fraction=cfg.val_fraction,
                               split_seed=cfg.split_seed, require_pass=cfg.require_pass,
                               num_classes=cfg.num_classes, test_fraction=cfg.test_fraction,
                               val_fold=cfg.val_fold)
    for w in data.warnings[:5]:
        echo(f"coderl train-critic: warning: {w}")
    if len(data.warnings) > 5:
        echo(f"coderl train-critic: warning: ... {len(data.warnings) - 5} more problems without a "
             f"passed program (listed in {out / METRICS_FILE})")

    fp = {"config": fingerprint(cfg, exclude=NOT_FINGERPRINTED), "data": _data_digest(data)}
    fp_file = out / FINGERPRINT_FILE
    if fp_file.is_file():
        old = json.loads(fp_file.read_text())
        if old != fp:
            changes = diff(old.get("config", {}), fp["config"])
            if old.get("data") != fp["data"]:
                changes.append(f"training data: {old.get('data')} -> {fp['data']} (other samples, "
                               "results or problems)")
            raise ConfigError(f"{out}: holds a critic trained under another config; refusing to "
                              f"resume it. Differences: {'; '.join(changes)}. Start fresh "
                              "(--fresh) or use another run directory.")
        done = out / METRICS_FILE
        if done.is_file():
            m = json.loads(done.read_text())
            if m.get("complete"):
                return m["summary"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fp_file, json.dumps(fp, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out / DATA_FILE, "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n"
                                               for e in data.examples))

    accelerator = _accelerator(cfg)
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    C, PC = cfg.num_classes, pass_class(cfg.num_classes)
    critic = CriticModel.build(
        cfg.model, num_classes=C, mode=cfg.mode, top_layers=cfg.top_layers, lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets,
        head_hidden=cfg.head_hidden, seed=cfg.seed, prompt_style=cfg.prompt_style,
        max_context_tokens=cfg.max_context_tokens, max_program_tokens=cfg.max_program_tokens,
        padding_side=cfg.padding_side).to(accelerator.device)
    by_id = {p.id: p for p in problems}
    contexts = {pid: critic.context(by_id[pid]) for pid in {e.problem_id for e in data.examples}}
    train, val, test = data.train, data.validation, data.test
    examples = train + val + test
    n_tr, n_val = len(train), len(val)
    encs = [critic.encode(contexts[e.problem_id], e.program) for e in examples]
    y = [label(e.outcome, C) for e in examples]
    y_train, y_val, y_test = y[:n_tr], y[n_tr:n_tr + n_val], y[n_tr + n_val:]

    # -- baselines (same held-out split) ----------------------------------------------------------
    X = feature_matrix([e.program for e in examples], [contexts[e.problem_id] for e in examples])
    lr_model = FeatureBaseline(C, seed=cfg.seed).fit(X[:n_tr], y_train)
    baselines: dict[str, Any] = {}
    baselines_test: dict[str, Any] = {}
    lr_val = lr_model.predict_proba(X[n_tr:n_tr + n_val]) if val else np.zeros((0, C))
    lr_test = lr_model.predict_proba(X[n_tr + n_val:]) if test else np.zeros((0, C))
    if val:
        baselines["majority"] = classification_metrics(y_val, majority_proba(y_train, len(val), C), C, PC)
        baselines["features"] = {**classification_metrics(y_val, lr_val, C, PC),
                                 "features": list(FEATURES), "coefficients": lr_model.coefficients()}
    if test:
        baselines_test["majority"] = classification_metrics(y_test, majority_proba(y_train, len(test), C),
                                                            C, PC)
        baselines_test["features"] = classification_metrics(y_test, lr_test, C, PC)

    # -- training set-up --------------------------------------------------------------------------
    cached = cfg.mode == "head"
    feats = None
    if cached:
        with accelerator.main_process_first():  # the others then find every part on disk
            feats = _cached_features(critic, examples, encs, out / FEATURES_DIR, cfg,
                                     progress and accelerator.is_main_process)
    labels_t = torch.tensor(y, dtype=torch.long)

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        if cached:
            x, m = _pad_feats([feats[i] for i in idx])
            return {"feats": x, "program_mask": m, "labels": labels_t[idx]}
        b = critic.collate([encs[i] for i in idx])
        b["labels"] = labels_t[idx]
        return b

    sampler = EpochBatchSampler(n_tr, cfg.batch_size, cfg.seed)
    # its own generator: creating an iterator draws a base seed from it, not from the global RNG
    # (which a resumed run restores mid-epoch, where an uninterrupted run creates no iterator)
    loader = torch.utils.data.DataLoader(list(range(n_tr)), batch_sampler=sampler,
                                         collate_fn=collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    module = critic.head if cached else critic
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    # the schedule counts the steps of one process over all the data (accelerate's scheduler steps
    # once per process); the loop counts this process's micro-batches
    total_steps = math.ceil(len(sampler) / cfg.grad_accum) * cfg.epochs
    warmup = int(cfg.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    n_batches = len(loader)
    local_steps = math.ceil(n_batches / cfg.grad_accum) * cfg.epochs
    weight = None
    if cfg.class_weights == "balanced":
        counts = np.bincount(y_train, minlength=C).astype(np.float64)
        weight = torch.tensor([len(y_train) / (C * c) if c else 1.0 for c in counts], dtype=torch.float32,
                              device=accelerator.device)

    # -- resume -----------------------------------------------------------------------------------
    state = TrainerState()
    cks = checkpoints(run_dir)
    if cks:
        ck = cks[-1]
        saved = torch.load(ck / STATE_FILE, weights_only=True)
        critic.load_weights(ck)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainerState(**saved["trainer"])
        _set_rng_state(saved["rng"])
        echo(f"coderl train-critic: resuming from {ck.name} (epoch {state.epoch + 1}, step "
             f"{state.global_step})")
    if cks:
        _trim_log(out / LOG_FILE, state)
    elif (out / LOG_FILE).exists():
        (out / LOG_FILE).unlink()  # a start from scratch: nothing of an earlier attempt counts
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(out / TB_DIR), purge_step=state.global_step + 1 if cks else None)
    log = JsonlAppender(out / LOG_FILE)
    if not cks:
        log.write({"event": "data", **data.summary()})
        if baselines:
            log.write({"event": "baselines", "majority": baselines["majority"],
                       "features": {k: v for k, v in baselines["features"].items() if k != "coefficients"}})

    def save_checkpoint() -> None:
        if not accelerator.is_main_process:
            return
        d = out / CHECKPOINTS_DIR
        d.mkdir(parents=True, exist_ok=True)
        final = d / f"step-{state.global_step:06d}"
        tmp = Path(tempfile.mkdtemp(dir=d, prefix=f".{final.name}.tmp-"))
        try:
            critic.save_pretrained(tmp / "critic")
            for f in (tmp / "critic").iterdir():
                os.replace(f, tmp / f.name)
            (tmp / "critic").rmdir()
            trainer = {**asdict(state), "seconds": state.seconds + time.time() - t_train}
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "trainer": trainer, "rng": _rng_state()}, tmp / STATE_FILE)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in checkpoints(run_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if cached:
            logits = module(batch["feats"])
        else:
            logits = module(batch)
        pooled = masked_max(logits.float(), batch["program_mask"])
        return torch.nn.functional.cross_entropy(pooled, batch["labels"], weight=weight)

    def evaluate() -> tuple[np.ndarray, dict[str, Any], np.ndarray, dict[str, Any] | None]:
        """Probabilities and metrics on validation, then on test (``None`` without a test split)."""
        if cached:
            hs = [feats[i] for i in range(n_tr, len(examples))]
        else:
            hs = critic.program_hidden(encs[n_tr:], batch_size=cfg.eval_batch_size,
                                       share_prompt=cfg.share_prompt)
        probs = np.array([critic.score_hidden(h)[0].numpy() for h in hs]).reshape(-1, C)
        pv, pt = probs[:n_val], probs[n_val:]
        return (pv, classification_metrics(y_val, pv, C, PC), pt,
                classification_metrics(y_test, pt, C, PC) if test else None)

    # -- the loop ---------------------------------------------------------------------------------
    t_train = time.time()
    bar = tqdm(total=local_steps, initial=state.global_step, unit="step", desc="train-critic",
               disable=not progress or not accelerator.is_local_main_process, dynamic_ncols=True)
    stopped = False
    try:
        for epoch in range(state.epoch, cfg.epochs):
            if stopped:
                break
            loader.set_epoch(epoch)
            it = (accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch
                  else loader)
            module.train()
            critic.train()
            for batch in it:
                state.batch_in_epoch += 1
                g = (state.batch_in_epoch - 1) // cfg.grad_accum
                group = min(cfg.grad_accum, n_batches - g * cfg.grad_accum)
                ends_group = state.batch_in_epoch == n_batches or state.batch_in_epoch % cfg.grad_accum == 0
                ctx = accelerator.no_sync(module) if not ends_group else _null()
                with ctx:
                    loss = loss_of(batch)
                    accelerator.backward(loss / group)
                loss_value = float(loss.detach())
                state.loss_sum += loss_value * len(batch["labels"])
                state.loss_count += len(batch["labels"])
                if not ends_group:
                    continue
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch + 1)
                if state.global_step % cfg.log_every == 0 and accelerator.is_main_process:
                    lr_now = scheduler.get_last_lr()[0]
                    log.write({"event": "step", "epoch": epoch + 1, "step": state.global_step,
                               "loss": round(loss_value, 6), "lr": lr_now})
                    tb.add_scalar("train/loss", loss_value, state.global_step)
                    tb.add_scalar("train/lr", lr_now, state.global_step)
                at_end = state.batch_in_epoch == n_batches
                if cfg.max_steps and state.global_step >= cfg.max_steps:
                    stopped = True
                    if not at_end:
                        save_checkpoint()
                        break
                elif cfg.save_every and state.global_step % cfg.save_every == 0 and not at_end:
                    save_checkpoint()
                if on_step is not None:
                    on_step(state.global_step)
            if state.batch_in_epoch < n_batches:
                break  # stopped mid-epoch (max_steps)
            # -- epoch end: held-out metrics, best checkpoint, resumable checkpoint ---------------
            train_loss = state.loss_sum / max(1, state.loss_count)
            entry: dict[str, Any] = {"epoch": epoch + 1, "step": state.global_step,
                                     "train_loss": round(train_loss, 6)}
            probs = test_probs = None
            if val:
                probs, m, test_probs, mt = evaluate()
                entry["validation"] = m
                if mt is not None:
                    entry["test"] = mt
                # ties in AUROC (a perfect one, say) go to the lower held-out loss
                score = ([epoch] if cfg.best_metric == "last"
                         else [m["auroc"], -m["loss"]] if cfg.best_metric == "auroc" and m.get("auroc") is not None
                         else [-m["loss"]])
            else:
                score = [-train_loss]
            is_best = state.best is None or score > state.best["score"]
            entry["best"] = is_best
            state.history.append(entry)
            if is_best:
                state.best = {"epoch": epoch + 1, "step": state.global_step, "score": score,
                              "validation": entry.get("validation"), "test": entry.get("test")}
                state.best_probs = probs.tolist() if probs is not None else None
                state.best_test_probs = test_probs.tolist() if test_probs is not None and test else None
                if accelerator.is_main_process:
                    critic.save_pretrained(out / BEST_DIR)
            state.epoch, state.batch_in_epoch, state.loss_sum, state.loss_count = epoch + 1, 0, 0.0, 0
            if accelerator.is_main_process:
                log.write({"event": "eval", **entry})
                tb.add_scalar("train/epoch_loss", train_loss, state.global_step)
                for k in ("accuracy", "macro_f1", "auroc", "average_precision", "loss"):
                    v = (entry.get("validation") or {}).get(k)
                    if v is not None:
                        tb.add_scalar(f"validation/{k}", v, state.global_step)
            save_checkpoint()
            echo_line = f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}"
            if val:
                mm = entry["validation"]
                echo_line += (f", held-out acc {mm['accuracy']:.3f} macro-F1 {mm['macro_f1']:.3f} "
                              f"AUROC {mm['auroc'] if mm['auroc'] is None else round(mm['auroc'], 3)}")
            bar.write(echo_line) if progress else echo(echo_line)
    finally:
        bar.close()
        tb.flush()
        tb.close()
        log.close()

    complete = state.epoch >= cfg.epochs
    seconds = round(state.seconds + time.time() - t_train, 1)
    summary = _summary(cfg, data, state, baselines, complete, seconds, out, time.time() - t_start)
    if test:
        summary["baselines_test"] = baselines_test
    if complete and val and state.best_probs is not None:
        best_probs = np.array(state.best_probs)
        # the interval is taken where the reported numbers are: test when there is one
        rep, rep_probs, rep_lr, rep_y = ((test, np.array(state.best_test_probs), lr_test, y_test)
                                         if test and state.best_test_probs is not None
                                         else (val, best_probs, lr_val, y_val))
        summary["bootstrap_auroc_diff"] = {
            "split": "test" if rep is test else "validation",
            **bootstrap_auroc_diff([e.problem_id for e in rep], [int(v == PC) for v in rep_y],
                                   rep_probs[:, PC], rep_lr[:, PC],
                                   resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)}
        if accelerator.is_main_process:
            parts = [(val, best_probs, lr_val)]
            if test and state.best_test_probs is not None:
                parts.append((test, np.array(state.best_test_probs), lr_test))
            lines = [json.dumps({"problem_id": e.problem_id, "index": e.index, "origin": e.origin,
                                 "split": e.split, "outcome": e.outcome,
                                 "probs": [round(float(p), 6) for p in bp],
                                 "feature_baseline_p_pass": round(float(lp[PC]), 6)})
                     for exs, pr, lrp in parts for e, bp, lp in zip(exs, pr, lrp)]
            atomic_write_text(out / PREDICTIONS_FILE, "".join(line + "\n" for line in lines))
    if accelerator.is_main_process:
        metrics = {"complete": complete, "summary": summary, "history": state.history,
                   "warnings": data.warnings}
        atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=1) + "\n")
        if complete:
            with JsonlAppender(out / LOG_FILE) as lg:
                lg.write({"event": "done", "best_epoch": summary["best_epoch"], "seconds": seconds})
    return summary


def _accelerator(cfg: CriticConfig):
    """An Accelerator for ``cfg``. accelerate keeps one state per process: a stage that ran
    before in this process (a pipeline) with another mixed precision or device would make it
    refuse; in a single-process run that state is reset instead."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    except ValueError as e:
        if "already been initialized" not in str(e) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _summary(cfg: CriticConfig, data: TrainingData, state: TrainerState, baselines: dict, complete: bool,
             seconds: float, out: Path, wall: float) -> dict[str, Any]:
    best = state.best or {}
    return {
        "complete": complete, "epochs_done": state.epoch, "epochs": cfg.epochs, "steps": state.global_step,
        "num_classes": cfg.num_classes, "classes": list(class_names(cfg.num_classes)), "mode": cfg.mode,
        "model": cfg.model, "data": data.summary(), "best_metric": cfg.best_metric,
        "best_epoch": best.get("epoch"), "validation": best.get("validation"),
        "test": best.get("test"),
        "baselines": baselines, "train_seconds": seconds, "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checkpoint": str(out / BEST_DIR), "metrics_path": str(out / METRICS_FILE),
    }


def _trim_log(path: Path, state: TrainerState) -> None:
    """Cut the log back to what the checkpoint being resumed had written (a killed run may have
    logged steps past it)."""
    if not path.is_file():
        return
    keep = []
    for rec in read_jsonl(path, tolerate_torn_tail=True):
        ev = rec.get("event")
        if ev == "step" and rec.get("step", 0) > state.global_step:
            continue
        if ev == "eval" and rec.get("epoch", 0) > state.epoch:
            continue
        if ev == "done":
            continue
        keep.append(rec)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))


def run(problems, run: RunDir, cfg: CriticConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's samples and results -> ``run.critic``."""
    summary = train_critic(list(problems), run.root, cfg, samples_path=run.samples,
                           results_path=run.results, echo=ctx.echo)
    for part in ("validation", "test"):
        v = summary.get(part) or {}
        if v:
            ctx.echo(f"      {part}: accuracy {v.get('accuracy')}, AUROC {v.get('auroc')}")
    return summary
