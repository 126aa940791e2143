"""Checkpoints of every training run (SFT, RL, the critic): the model in a format its readers
load, plus what a resumed run needs to continue as if it had never stopped.
``<stage>/checkpoints/step-NNNNNN/`` holds

* the model, written by the stage's task (the actor: a Hugging Face checkpoint or a peft adapter
  ``coderl generate --model`` loads; the critic: what ``CriticModel.from_pretrained`` reads);
* ``trainer_state.pt``: optimizer, scheduler and RNG states, the trainer's counters and history,
  the batch source's state, and the model's *signature* (another architecture is refused);
* ``progress.json``: the step, the total steps and whether it stopped early (tells a finished
  run from one a larger ``max_steps`` continues, without loading the state).

Writes are atomic. :func:`publish_model` puts an actor model at the top of the stage directory
(``<run>/sft/``, ``<run>/rl/``) file by file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..io import atomic_dir
from .data import TrainingError

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"
PROGRESS_FILE = "progress.json"     # {"step", "total_steps", "stopped_early"}
INFO_FILE = "coderl_training.json"   # what the model is: stage, step, base spec, mode
#: files of a saved model (what publish_model replaces at the top of a stage directory)
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
                       "adapter_config.json", "adapter_model.safetensors", "tokenizer*", "special_tokens_map.json",
                       "chat_template.jinja", "vocab.json", "merges.txt", "spiece.model", INFO_FILE)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(stage_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a stage directory, oldest first."""
    d = Path(stage_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file())


def model_signature(model) -> dict[str, Any]:
    """What a checkpoint's weights fit: the base model's class and sizes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    return {"class": type(base).__name__, "model_type": getattr(cfg, "model_type", None),
            "vocab_size": getattr(cfg, "vocab_size", None),
            "hidden_size": getattr(cfg, "hidden_size", getattr(cfg, "d_model", None)),
            "layers": getattr(cfg, "num_hidden_layers", getattr(cfg, "num_layers", None)),
            "parameters": int(sum(p.numel() for p in base.parameters()))}


def check_signature(saved: dict[str, Any] | None, now: dict[str, Any] | None, where: Path) -> None:
    if saved and now and saved != now:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in now if saved.get(k) != now.get(k))
        raise TrainingError(f"{where}: this checkpoint belongs to another model architecture "
                            f"({diffs}); it cannot be resumed with this model. Start fresh "
                            "(--fresh) or point the stage at the model it was trained from.")


# -- RNG ---------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    s = {"python": random.getstate(), "torch": torch.get_rng_state(),
         "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(_as_tuple(s["python"]))
    torch.set_rng_state(s["torch"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# -- models ------------------------------------------------------------------------------------

def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def save_model(model, tokenizer, path: str | Path, *, base_spec: str | None,
               info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a peft model: its adapter) and the tokenizer into the directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        for c in model.peft_config.values():
            c.base_model_name_or_path = base_spec
        with warnings.catch_warnings():  # a base that is itself an adapter has no config.json
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.save_pretrained(str(path))
    else:
        model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    (path / INFO_FILE).write_text(json.dumps({**(info or {}), "base_model": base_spec}, indent=1) + "\n")
    return path


def load_weights(model, ck: str | Path) -> None:
    """Load a checkpoint's trainable weights into ``model`` (one that does not fit: TrainingError)."""
    from safetensors.torch import load_file

    ck = Path(ck)
    if is_peft(model):
        f = ck / "adapter_model.safetensors"
        if not f.is_file():
            raise TrainingError(f"{ck}: no adapter_model.safetensors (not a LoRA checkpoint; was it "
                                "trained with mode full?)")
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, load_file(str(f)))
        bad = [k for k in getattr(res, "unexpected_keys", []) if "lora_" in k]
        if bad:
            raise TrainingError(f"{ck}: the adapter does not fit this model (unexpected {bad[:3]})")
        return
    files = sorted(ck.glob("model*.safetensors"))
    if not files:
        raise TrainingError(f"{ck}: no model*.safetensors (not a full checkpoint; was it trained with mode lora?)")
    sd = {k: v for f in files for k, v in load_file(str(f)).items()}
    try:
        res = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise TrainingError(f"{ck}: the weights do not fit this model ({str(e)[:300]})") from None
    tied = {k for k, _ in model.named_parameters(remove_duplicate=False)} - {k for k, _ in model.named_parameters()}
    missing = [k for k in res.missing_keys if k not in tied and not k.endswith("lm_head.weight")]
    if res.unexpected_keys or missing:
        raise TrainingError(f"{ck}: the weights do not fit this model (missing {missing[:3]}, "
                            f"unexpected {list(res.unexpected_keys)[:3]})")


def save_checkpoint(stage_dir: str | Path, step: int, write_model: Callable[[Path], None], *, optimizer,
                    scheduler, trainer: dict[str, Any], progress: dict[str, Any], keep: int,
                    signature: dict[str, Any] | None = None, source: dict[str, Any] | None = None) -> Path:
    """Write ``checkpoints/step-NNNNNN/`` (the model by ``write_model(directory)``); keep the newest ``keep``."""
    final = Path(stage_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    with atomic_dir(final) as tmp:
        write_model(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "trainer": trainer, "rng": rng_state(), "signature": signature,
                    "source": source or {}}, tmp / STATE_FILE)
        (tmp / PROGRESS_FILE).write_text(json.dumps(progress) + "\n")
    for old in list_checkpoints(stage_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ck: str | Path, load_model: Callable[[Path], None], *, optimizer, scheduler,
                    signature: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore weights, optimizer and scheduler from ``ck``; the saved state (trainer, source, rng)."""
    ck = Path(ck)
    try:
        saved = torch.load(ck / STATE_FILE, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file
        raise TrainingError(f"{ck / STATE_FILE}: unreadable trainer state ({type(e).__name__}: "
                            f"{str(e)[:200]}); delete the checkpoint to resume from an older one") from None
    check_signature(saved.get("signature"), signature, ck)
    load_model(ck)
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainingError(f"{ck}: the optimizer state does not fit this model's trainable "
                            f"parameters ({e}); was it trained in another mode?") from None
    scheduler.load_state_dict(saved["scheduler"])
    return saved


def read_progress(ck: str | Path) -> dict[str, Any] | None:
    """A checkpoint's ``progress.json`` (None when it has none)."""
    try:
        return json.loads((Path(ck) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def publish_model(model, tokenizer, stage_dir: str | Path, *, base_spec: str | None,
                  info: dict[str, Any] | None = None) -> None:
    """Save the model at the top of ``stage_dir`` file by file (stale model files removed)."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=stage_dir, prefix=".model.tmp-"))
    try:
        save_model(model, tokenizer, tmp, base_spec=base_spec, info=info)
        new = {f.name for f in tmp.iterdir()}
        for pat in MODEL_FILE_PATTERNS:
            for old in stage_dir.glob(pat):
                if old.is_file() and old.name not in new:
                    old.unlink()
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == INFO_FILE):  # the info file last
            os.replace(f, stage_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
