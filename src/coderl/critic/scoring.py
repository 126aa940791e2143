"""The ``critic-score`` stage: samples (+ results) and a critic -> ``<run>/critic_scores.npz``.

For each sample: the class probabilities and, per program token, q̂ of its actual outcome and of
``passed`` (:mod:`coderl.critic.scores`); identical programs of a problem are scored once.

Resumable: chunks go to ``critic_scores.npz.parts/``, merged into the final file at the end; a
rerun skips what is scored (a changed program is scored again). Scores of another critic are
refused (the file records its fingerprint). A head-mode critic scores the programs it trained on
from the hidden states its training cached (``reuse_features``): no second backbone pass.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from .critic_trainer import resolve_checkpoint
from .feature_cache import program_key
from ..records import join
from .data import CriticError, label
from .model import CONFIG_FILE, CriticModel
from .score_config import ScoreConfig
from .scores import PARTS_SUFFIX, SCORES_FILE, SampleScores, program_hash, read_scores, write_scores

CHUNK = 256  # samples per part file


def critic_fingerprint(path: str | Path) -> str:
    """A digest of a critic checkpoint: its config and every weight file."""
    path = Path(path)
    h = hashlib.sha256((path / CONFIG_FILE).read_bytes())
    for f in sorted(path.rglob("*.safetensors")):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def cached_features(ckpt: Path, settings) -> dict[str, torch.Tensor]:
    """A head-mode critic's feature cache (in the critic directory of ``ckpt``); else empty."""
    from .critic_trainer import FEATURES_DIR, FINGERPRINT_FILE

    if settings.mode != "head":
        return {}
    for d in (ckpt.parent, ckpt.parent.parent):
        if (d / FEATURES_DIR).is_dir() and (d / FINGERPRINT_FILE).is_file():
            have: dict[str, torch.Tensor] = {}
            for f in sorted((d / FEATURES_DIR).glob("part-*.pt")):
                part = torch.load(f, weights_only=True)
                have.update(zip(part["keys"], part["feats"]))
            return have
    return {}


def score(problems, run_dir: str | Path, cfg: ScoreConfig, *, samples_path: str | Path,
          results_path: str | Path | None = None, out_path: str | Path | None = None,
          critic: CriticModel | None = None, fresh: bool = False) -> dict[str, Any]:
    """Score every sample of ``samples_path`` (``critic``: skip loading ``cfg.checkpoint``'s)."""
    from tqdm.auto import tqdm

    t0 = time.time()
    out_path = Path(out_path) if out_path is not None else Path(run_dir) / SCORES_FILE
    parts_dir = out_path.with_name(out_path.name + PARTS_SUFFIX)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt = resolve_checkpoint(run_dir, cfg.checkpoint)
    settings = CriticModel.read_settings(ckpt)
    meta = {"classes": settings.classes, "num_classes": settings.num_classes,
            "checkpoint": str(ckpt), "critic_fingerprint": critic_fingerprint(ckpt), "arch": settings.arch,
            "format": 1, "offsets": "[start, end) character spans in Sample.program",
            "q_outcome": "per token P(the sample's outcome); NaN without a result",
            "q_pass": "per token P(passed)"}
    if fresh:
        out_path.unlink(missing_ok=True)
        shutil.rmtree(parts_dir, ignore_errors=True)
    by_id = {p.id: p for p in problems}
    pairs = join(samples_path, results_path, by_id, require_results=False)
    sources = ([out_path] if out_path.exists() else []) + sorted(parts_dir.glob("part-*.npz"))
    done = _scores_so_far(sources, meta)
    current = {s.key: (s, r) for s, r in pairs}
    todo = [(s, r) for s, r in pairs if not _still_valid(done.get(s.key), s, r)]
    summary = {"samples": len(pairs), "skipped_done": len(pairs) - len(todo), "scored": 0,
               "tokens": 0, "checkpoint": str(ckpt), "path": str(out_path)}
    if todo:
        if critic is None:
            if cfg.device == "cuda" and not torch.cuda.is_available():
                raise ConfigError("critic_score.device: cuda requested but torch sees no GPU")
            auto = "cuda" if torch.cuda.is_available() else "cpu"
            critic = CriticModel.from_pretrained(ckpt, device=auto if cfg.device == "auto" else cfg.device)
        scorer = _ChunkScorer(critic, by_id, cached_features(ckpt, settings) if cfg.reuse_features else {}, cfg)
        parts_dir.mkdir(parents=True, exist_ok=True)
        n_part = len(list(parts_dir.glob("part-*.npz")))
        bar = tqdm(total=len(todo), unit="prog", desc="critic-score", disable=not cfg.progress, dynamic_ncols=True)
        for c in range(0, len(todo), CHUNK):
            recs = scorer(todo[c:c + CHUNK])
            write_scores(parts_dir / f"part-{n_part:05d}.npz", recs, meta)
            n_part += 1
            done.update((r.key, r) for r in recs)
            bar.update(len(recs))
        bar.close()
        summary.update(scored=len(todo), tokens=scorer.tokens, from_cache=scorer.from_cache)
    stale = len(done.keys() - current.keys())
    if todo or stale or sources != [out_path]:
        # the final file: the current samples' scores, in the samples' order
        write_scores(out_path, [done[k] for k in current if k in done], meta)
        shutil.rmtree(parts_dir, ignore_errors=True)
    if stale:
        summary["dropped_stale"] = stale  # scores of samples no longer in the samples file
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def _scores_so_far(sources: list[Path], meta: dict[str, Any]) -> dict[tuple[str, int], SampleScores]:
    """The scores already written (the final file, a killed run's parts); another critic's are refused."""
    done: dict[tuple[str, int], SampleScores] = {}
    fp = meta["critic_fingerprint"]
    for f in sources:
        part = read_scores(f)
        if part.meta.get("critic_fingerprint") != fp:
            raise ConfigError(f"{f}: holds scores of another critic ({part.meta.get('checkpoint')}, "
                              f"fingerprint {part.meta.get('critic_fingerprint')}; now {meta['checkpoint']}, "
                              f"{fp}); refusing to mix them. Score fresh (--fresh) or write elsewhere.")
        done.update(part)
    return done


def _still_valid(old: SampleScores | None, s, r) -> bool:
    """Stored scores of the sample's current program and outcome."""
    outcome = r["outcome"] if r else None
    return old is not None and old.program_hash == program_hash(s.program) and old.outcome == outcome


class _ChunkScorer:
    """Scores chunks of (sample, result), each distinct (problem, program) once."""

    def __init__(self, critic: CriticModel, by_id: dict, feats: dict, cfg: ScoreConfig):
        self.critic, self.by_id, self.feats, self.cfg = critic, by_id, feats, cfg
        self.contexts: dict[str, str] = {}
        self.memo: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, list]] = {}
        self.tokens = self.from_cache = 0

    def _encode_new(self, chunk) -> tuple[list, list]:
        new_keys, new_encs = [], []
        for s, _ in chunk:
            k = (s.problem_id, s.program)
            if k in self.memo or k in new_keys:
                continue
            if s.problem_id not in self.contexts:
                self.contexts[s.problem_id] = self.critic.context(self.by_id[s.problem_id])
            e = self.critic.encode(self.contexts[s.problem_id], s.program)
            h = self.feats.get(program_key(e))  # the same token ids: the same prompt variant
            if h is not None and h.shape[0] == len(e.prog_ids):
                probs, tok = self.critic.score_hidden(h.float())
                self.memo[k] = (probs, tok, e.offsets)
                self.from_cache += 1
                continue
            new_keys.append(k)
            new_encs.append(e)
        return new_keys, new_encs

    def __call__(self, chunk) -> list[SampleScores]:
        new_keys, new_encs = self._encode_new(chunk)
        results = self.critic.score(new_encs, batch_size=self.cfg.batch_size, share_prompt=self.cfg.share_prompt)
        for k, e, (probs, tok) in zip(new_keys, new_encs, results):
            self.memo[k] = (probs, tok, e.offsets)
        C, PC = self.critic.num_classes, self.critic.pass_class
        recs = []
        for s, r in chunk:
            probs, tok, offsets = self.memo[(s.problem_id, s.program)]
            outcome = r["outcome"] if r else None
            q_out = (tok[:, label(outcome, C)].numpy() if outcome is not None
                     else np.full(len(tok), np.nan, dtype=np.float32))
            recs.append(SampleScores(s.problem_id, s.index, probs.numpy(), q_out, tok[:, PC].numpy(),
                                     np.array(offsets, dtype=np.int32).reshape(-1, 2), outcome, PC,
                                     program_hash(s.program)))
            self.tokens += len(tok)
        return recs


def run(problems, run, cfg: ScoreConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's samples (and results) -> its critic scores."""
    results = run.results if run.results.is_file() else None
    return score(problems, run.root, cfg, samples_path=run.samples, results_path=results, out_path=run.critic_scores)


def rank_by_critic(samples_path: str | Path, results_path: str | Path, scores_path: str | Path,
                   problem_ids=None, origins: tuple[str, ...] = ("sampled",)) -> dict[str, Any]:
    """The ranking measure over the samples of ``origins`` (:func:`coderl.critic.metrics.ranking`)."""
    from .metrics import ranking

    scores = read_scores(scores_path)
    pairs = join(samples_path, results_path, problem_ids)
    cand: dict[str, list[tuple[float, bool]]] = {}
    for s, r in pairs:
        if s.origin not in origins:
            continue
        sc = scores.get(s.key)
        if sc is None:
            raise CriticError(f"{scores_path}: no scores for (problem_id={s.problem_id!r}, "
                              f"index={s.index}) of {samples_path}; run coderl critic-score")
        cand.setdefault(s.problem_id, []).append((sc.p_pass, r["outcome"] == "passed"))
    return ranking(cand)
