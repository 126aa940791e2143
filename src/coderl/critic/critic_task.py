"""The critic as the Trainer trains it: :class:`CriticTask`, the ``train-critic`` stage's.

* **Model**: :class:`~coderl.critic.model.CriticModel` (mode ``head``: on cached hidden states);
  the loss: the program tokens' logits max-pooled, cross-entropy with the outcome class.
* **Validation** at every epoch's end, on validation (and test): the best by AUROC (ties: lower
  loss), by loss, or the last goes to ``critic/best/``.
* **Summary**: the best epoch's metrics beside the baselines (majority class, a logistic
  regression on program features), the bootstrap interval of AUROC(critic) - AUROC(features),
  and the held-out probabilities in ``val_predictions.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_text
from ..training.checkpoint import model_signature
from ..training.engine import METRICS_FILE, peak_rss_mb
from ..training.task import Point, RunResult, TrainingTask, Validation
from .critic_config import CriticConfig
from .data import TrainingData, class_names, label, pass_class
from .feature_cache import cache_features, pad_features
from .features import FEATURES, FeatureBaseline, feature_matrix, majority_proba
from .metrics import bootstrap_auroc_diff, classification_metrics
from .model import CriticModel, masked_max

BEST_DIR = "best"                     # the best critic (what critic-score loads)
FEATURES_DIR = "features"             # cached hidden states (mode head)
PREDICTIONS_FILE = "val_predictions.jsonl"  # the best epoch's held-out probabilities


class CriticTask(TrainingTask):
    name = "train-critic"

    def __init__(self, problems, data: TrainingData, cfg: CriticConfig, out: Path, *, progress: bool):
        self.by_id = {p.id: p for p in problems}
        self.data, self.cfg, self.out, self.progress = data, cfg, Path(out), progress
        self.published = self.out / BEST_DIR
        self.info: dict[str, Any] = {"data": data.summary()}
        self.C, self.PC = cfg.num_classes, pass_class(cfg.num_classes)
        self.cached = cfg.mode == "head"
        self.examples = data.train + data.validation + data.test
        self.row = {id(e): i for i, e in enumerate(self.examples)}   # items -> rows
        self.n_tr, self.n_val = len(data.train), len(data.validation)
        self.y = [label(e.outcome, self.C) for e in self.examples]
        self.critic: CriticModel | None = None  # (this and the next few: set by build())
        self.encs: list = []
        self.feats: list[torch.Tensor] | None = None
        self.labels = torch.tensor(self.y, dtype=torch.long)
        self.class_weight: torch.Tensor | None = None
        self.baselines: dict[str, Any] = {}
        self.baselines_test: dict[str, Any] = {}
        self.lr_val = self.lr_test = np.zeros((0, self.C))

    # -- the model --------------------------------------------------------------------------------
    def build(self, accelerator) -> torch.nn.Module:
        """The critic, programs encoded, baselines fitted, features cached; the module that trains."""
        cfg = self.cfg
        self.critic = CriticModel.build(
            cfg.model, num_classes=self.C, mode=cfg.mode, top_layers=cfg.top_layers, lora_r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets,
            head_hidden=cfg.head_hidden, seed=cfg.seed, prompt_style=cfg.prompt_style,
            max_context_tokens=cfg.max_context_tokens, max_program_tokens=cfg.max_program_tokens,
            padding_side=cfg.padding_side).to(accelerator.device)
        contexts = {pid: self.critic.context(self.by_id[pid]) for pid in {e.problem_id for e in self.examples}}
        self.encs = [self.critic.encode(contexts[e.problem_id], e.program) for e in self.examples]
        self.fit_baselines(contexts)
        if self.cached:
            with accelerator.main_process_first():  # the others then find every part on disk
                self.feats = cache_features(self.critic, self.examples, self.encs, self.out / FEATURES_DIR,
                                            batch_size=cfg.eval_batch_size, share_prompt=cfg.share_prompt,
                                            progress=self.progress and accelerator.is_main_process)
        if cfg.class_weights == "balanced":
            counts = np.bincount(self.y[:self.n_tr], minlength=self.C).astype(np.float64)
            self.class_weight = torch.tensor([self.n_tr / (self.C * c) if c else 1.0 for c in counts],
                                             dtype=torch.float32, device=accelerator.device)
        self.critic.train()
        return self.critic.head if self.cached else self.critic

    def fit_baselines(self, contexts: dict[str, str]) -> None:
        """The majority class and the feature regression, measured on the held-out splits."""
        C, PC, n_tr, n_val, y = self.C, self.PC, self.n_tr, self.n_val, self.y  # rows: train, validation, test
        X = feature_matrix([e.program for e in self.examples], [contexts[e.problem_id] for e in self.examples])
        lr_model = FeatureBaseline(C, seed=self.cfg.seed).fit(X[:n_tr], y[:n_tr])
        for split, exs, lo, hi in (("validation", self.data.validation, n_tr, n_tr + n_val),
                                   ("test", self.data.test, n_tr + n_val, len(y))):
            if not exs:
                continue
            probs = lr_model.predict_proba(X[lo:hi])
            majority = classification_metrics(y[lo:hi], majority_proba(y[:n_tr], len(exs), C), C, PC)
            features = classification_metrics(y[lo:hi], probs, C, PC)
            if split == "test":
                self.lr_test, self.baselines_test = probs, {"majority": majority, "features": features}
                continue
            self.lr_val, features = probs, {**features, "features": list(FEATURES)}
            self.baselines.update(majority=majority, features={**features, "coefficients": lr_model.coefficients()})
            self.info["baselines"] = {"majority": majority, "features": features}

    def collate(self, kind: str, items: list) -> dict[str, torch.Tensor]:
        idx = [self.row[id(e)] for e in items]
        if self.cached:
            x, m = pad_features([self.feats[i] for i in idx])
            return {"feats": x, "program_mask": m, "labels": self.labels[idx]}
        batch = self.critic.collate([self.encs[i] for i in idx])
        batch["labels"] = self.labels[idx]
        return batch

    def loss(self, model, kind: str, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Max-pooled token logits, cross-entropy with the outcome class."""
        logits = model(batch["feats"]) if self.cached else model(batch)
        pooled = masked_max(logits.float(), batch["program_mask"])
        return torch.nn.functional.cross_entropy(pooled, batch["labels"], weight=self.class_weight), {}

    def num_tokens(self, batch: dict) -> int:
        return int(batch["program_mask"].sum())

    # -- validation -------------------------------------------------------------------------------
    def validate(self, model, point: Point) -> Validation | None:
        if point.step == 0:
            return None
        cfg, train_loss = self.cfg, point.train_loss
        entry: dict[str, Any] = {"epoch": point.epoch, "step": point.step, "train_loss": round(train_loss, 6)}
        probs = test_probs = None
        shown = f"epoch {point.epoch}/{cfg.epochs}: train loss {train_loss:.4f}"
        if self.data.validation:
            probs, m, test_probs, mt = self.evaluate()
            entry["validation"] = m
            if mt is not None:
                entry["test"] = mt
            # ties in AUROC (a perfect one, say) go to the lower held-out loss
            score = ([point.step] if cfg.best_metric == "last"
                     else [m["auroc"], -m["loss"]] if cfg.best_metric == "auroc" and m.get("auroc") is not None
                     else [-m["loss"]])
            shown += (f", held-out acc {m['accuracy']:.3f} macro-F1 {m['macro_f1']:.3f} "
                      f"AUROC {m['auroc'] if m['auroc'] is None else round(m['auroc'], 3)}")
        else:
            score = [-train_loss]
        v = entry.get("validation") or {}
        scalars = {"train/epoch_loss": train_loss, **{f"validation/{k}": v[k] for k in (
            "accuracy", "macro_f1", "auroc", "average_precision", "loss") if v.get(k) is not None}}
        return Validation(
            entry=entry, score=score, scalars=scalars, shown=shown,
            best={"epoch": point.epoch, "step": point.step, "validation": entry.get("validation"),
                  "test": entry.get("test")},
            keep={"probs": probs.tolist() if probs is not None else None,
                  "test_probs": test_probs.tolist() if test_probs is not None and self.data.test else None})

    def evaluate(self) -> tuple[np.ndarray, dict[str, Any], np.ndarray, dict[str, Any] | None]:
        """Probabilities and metrics on validation, then on test (metrics ``None`` without one)."""
        n_tr, n_val, C, PC = self.n_tr, self.n_val, self.C, self.PC
        hs = self.feats[n_tr:] if self.cached else self.critic.program_hidden(
            self.encs[n_tr:], batch_size=self.cfg.eval_batch_size, share_prompt=self.cfg.share_prompt)
        probs = np.array([self.critic.score_hidden(h)[0].numpy() for h in hs]).reshape(-1, C)
        pv, pt = probs[:n_val], probs[n_val:]
        y_val, y_test = self.y[n_tr:n_tr + n_val], self.y[n_tr + n_val:]
        return (pv, classification_metrics(y_val, pv, C, PC), pt,
                classification_metrics(y_test, pt, C, PC) if self.data.test else None)

    # -- saved critics ----------------------------------------------------------------------------
    def save(self, model, path: Path, step: int) -> None:
        self.critic.save_files(path)

    def load(self, model, path: Path) -> None:
        self.critic.load_weights(path)

    def publish(self, model, step: int, selected: str) -> None:
        self.critic.save_pretrained(self.published)

    def signature(self, model) -> dict[str, Any]:
        return model_signature(self.critic.backbone)

    # -- the summary ------------------------------------------------------------------------------
    def summary(self, result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
        st, cfg, data = result.state, self.cfg, self.data
        best = st.best or {}
        summary: dict[str, Any] = {
            "complete": result.complete, "epochs_done": st.epochs, "epochs": cfg.epochs, "steps": st.step,
            "num_classes": cfg.num_classes, "classes": list(class_names(cfg.num_classes)), "mode": cfg.mode,
            "model": cfg.model, "data": data.summary(), "best_metric": cfg.best_metric,
            "best_epoch": best.get("epoch"), "validation": best.get("validation"), "test": best.get("test"),
            "baselines": self.baselines, "train_seconds": round(result.train_seconds, 1),
            "wall_seconds": round(result.wall_seconds, 1), "peak_rss_mb": peak_rss_mb(),
            "checkpoint": str(self.published), "metrics_path": str(self.out / METRICS_FILE),
        }
        if data.warnings:
            summary["warnings"] = data.warnings
        if data.test:
            summary["baselines_test"] = self.baselines_test
        keep = st.best_keep or {}
        if result.complete and data.validation and keep.get("probs") is not None:
            summary["bootstrap_auroc_diff"] = self.bootstrap(keep)
            if result.main:
                self.write_predictions(keep)
        return summary, {"history": st.history, "warnings": data.warnings}

    def held_out(self, keep: dict[str, Any]) -> list[tuple]:
        """Per held-out split (validation, then a kept test): split, examples, probs, baseline's, labels."""
        n_tr, n_val = self.n_tr, self.n_val
        parts = [("validation", self.data.validation, np.array(keep["probs"]), self.lr_val, self.y[n_tr:n_tr + n_val])]
        if self.data.test and keep.get("test_probs") is not None:
            parts.append(("test", self.data.test, np.array(keep["test_probs"]), self.lr_test, self.y[n_tr + n_val:]))
        return parts

    def bootstrap(self, keep: dict[str, Any]) -> dict[str, Any]:
        """AUROC(critic) - AUROC(feature baseline) with its interval, on test when there is one."""
        PC = self.PC
        split, exs, probs, lr, y = self.held_out(keep)[-1]
        return {"split": split,
                **bootstrap_auroc_diff([e.problem_id for e in exs], [int(v == PC) for v in y], probs[:, PC],
                                       lr[:, PC], resamples=self.cfg.bootstrap, seed=self.cfg.bootstrap_seed)}

    def write_predictions(self, keep: dict[str, Any]) -> None:
        """The best validation's held-out probabilities, beside the feature baseline's P(passed)."""
        lines = [json.dumps({"problem_id": e.problem_id, "index": e.index, "origin": e.origin,
                             "split": e.split, "outcome": e.outcome,
                             "probs": [round(float(p), 6) for p in bp],
                             "feature_baseline_p_pass": round(float(lp[self.PC]), 6)})
                 for _, exs, pr, lrp, _ in self.held_out(keep) for e, bp, lp in zip(exs, pr, lrp)]
        atomic_write_text(self.out / PREDICTIONS_FILE, "".join(line + "\n" for line in lines))
