"""The ``train-critic`` stage: samples + results -> a critic in ``<run>/critic/``.

The data is :mod:`coderl.critic.data`'s (in ``critic/data.jsonl``), the task
:class:`~coderl.critic.critic_task.CriticTask`; steps stay within an epoch. The best critic is
``critic/best/``; ``critic/metrics.json`` holds the summary, validations and warnings.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..config import fingerprint
from ..rundir import RunDir
from ..training.batches import FixedBatches
from ..training.checkpoint import CHECKPOINTS_DIR, list_checkpoints
from ..training.engine import DATA_FILE, FINGERPRINT_FILE, METRICS_FILE, LoopSettings, Trainer
from .critic_config import NOT_FINGERPRINTED, CriticConfig
from .critic_task import BEST_DIR, FEATURES_DIR, PREDICTIONS_FILE, CriticTask
from .data import CriticError, TrainingData, build_training_data

# the names of <run>/critic/'s layout that critic-score, the benchmarks and the package read here
__all__ = ["train_critic", "run", "critic_dir", "checkpoints", "resolve_checkpoint", "CRITIC_DIR",
           "BEST_DIR", "CHECKPOINTS_DIR", "DATA_FILE", "FEATURES_DIR", "FINGERPRINT_FILE", "METRICS_FILE",
           "PREDICTIONS_FILE"]

CRITIC_DIR = RunDir.CRITIC            # <run>/critic/


def critic_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CRITIC_DIR


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete resumable checkpoints of a run, oldest first."""
    return list_checkpoints(critic_dir(run_dir))


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


def _data_digest(data: TrainingData) -> str:
    h = hashlib.sha256()
    for e in data.examples:
        h.update(f"{e.problem_id}\0{e.index}\0{e.origin}\0{e.outcome}\0{e.split}\0".encode())
        h.update(hashlib.sha1(e.program.encode()).digest())
    return h.hexdigest()[:16]


def train_critic(problems, run_dir: str | Path, cfg: CriticConfig, *, samples_path: str | Path,
                 results_path: str | Path, progress: bool | None = None, fresh: bool = False,
                 on_step: Callable[[int], None] | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the critic of ``run_dir`` on ``samples_path`` + ``results_path``; the summary."""
    progress = cfg.progress if progress is None else progress
    out = critic_dir(run_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    data = build_training_data(problems, samples_path, results_path, include_gold=cfg.include_gold,
                               gold_in_validation=cfg.gold_in_validation, val_fraction=cfg.val_fraction,
                               split_seed=cfg.split_seed, require_pass=cfg.require_pass, val_fold=cfg.val_fold,
                               num_classes=cfg.num_classes, test_fraction=cfg.test_fraction)
    for w in data.warnings[:5]:
        echo(f"coderl train-critic: warning: {w}")
    if len(data.warnings) > 5:
        echo(f"coderl train-critic: warning: ... {len(data.warnings) - 5} more (listed in {out / METRICS_FILE})")
    fp = {"config": fingerprint(cfg, exclude=NOT_FINGERPRINTED), "data": _data_digest(data)}
    source = FixedBatches({"critic": data.train}, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                          cross_epochs=False)
    trainer = Trainer(CriticTask(problems, data, cfg, out, progress=progress), source,
                      LoopSettings.of(cfg, "critic", progress=progress), out=out, fingerprint=fp,
                      data_records=[asdict(e) for e in data.examples], on_step=on_step, echo=echo)
    return trainer.run()


def run(problems, run: RunDir, cfg: CriticConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's samples and results -> ``run.critic``."""
    summary = train_critic(list(problems), run.root, cfg, samples_path=run.samples,
                           results_path=run.results, echo=ctx.echo)
    for part in ("validation", "test"):
        v = summary.get(part) or {}
        if v:
            ctx.echo(f"      {part}: accuracy {v.get('accuracy')}, AUROC {v.get('auroc')}")
    return summary
