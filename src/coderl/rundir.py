"""``runs/<name>/``: the name of every file a run holds, and what produced each of them.

Every box (a stage's output) has a sidecar ``<box>.meta.json`` written by its stage: the stage's
name, the *fingerprint* of the settings that decide its content, whether it is complete, and the
run's problem selection. A stage resumes its box only under the same fingerprint, else stops with
a :class:`~coderl.config.ConfigError` naming the differing settings. Verbs run by hand read the
selection recorded beside the samples, so they agree with ``generate`` on a run's problems.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, diff
from .io import atomic_write_text


class RunDir:
    """The files of one run directory (``files`` puts some boxes elsewhere: ``--out FILE``)."""

    CONFIG = "config.yaml"
    SAMPLES = "samples.jsonl"
    RESULTS = "results.jsonl"
    REPORT_MD = "report.md"
    REPORT_JSON = "report.json"
    REPORT_COMPARE = "report.compare.json"  # evaluate --compare: this run's report against another
    CRITIC = "critic"                 # critic checkpoints, logs, held-out metrics
    CRITIC_SCORES = "critic_scores.npz"
    SFT = "sft"                       # the actor after the SFT warm-up (HF checkpoint or adapter)
    RL = "rl"                         # the actor after CodeRL's RL
    COMPARE_JSON = "compare.json"     # the run's models side by side on held-out problems
    COMPARE_MD = "compare.md"
    COMPARE_DIR = "compare"           # compare/<model>/: its samples, results, report
    EXPERT = "expert"                 # the actor after expert iteration (coderl train-expert)
    ONLINE = "online"                 # the actor after online RL, and its rounds (coderl train-online)
    REPAIR = "repair"                 # the repair model (coderl train-repair)
    CRITIC_SAMPLING = "critic_sampling"  # critic-sample: its programs, verdicts, submission, report
    #: the boxes that are directories (the others are files)
    DIRS = ("critic", "sft", "rl", "compare_dir", "expert", "online", "repair", "critic_sampling")
    #: run models a model setting may name instead of a path (``generation.model: sft``)
    MODELS = ("sft", "rl", "expert", "online")

    def __init__(self, root: str | Path, files: dict[str, str | Path] | None = None):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: the run directory is a file")
        self.files = {k: Path(v) for k, v in (files or {}).items()}
        for k in self.files:
            self.box(k)  # a known name

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def __getattr__(self, name: str) -> Path:
        return self.box(name)

    @classmethod
    def names(cls) -> list[str]:
        return [k.lower() for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)]

    def box(self, name: str) -> Path:
        """A box by its name (``"samples"``, ``"results"``, ``"sft"``, ...)."""
        if name.startswith("_") or name not in self.names():
            raise KeyError(f"no box named {name!r} in a run directory")
        if name in self.__dict__.get("files", {}):
            return self.files[name]
        return self.root / getattr(type(self), name.upper())

    def model(self, spec: str) -> str:
        """A model setting as a spec: ``sft`` / ``rl`` ... name this run's models, anything else itself."""
        return str(self.box(spec)) if spec in self.MODELS else spec

    def mkdir(self) -> "RunDir":
        self.root.mkdir(parents=True, exist_ok=True)
        return self


# -- box sidecars -------------------------------------------------------------------------------

def meta_path(box: str | Path) -> Path:
    box = Path(box)
    return box.with_name(box.name + ".meta.json")


def read_meta(box: str | Path) -> dict[str, Any] | None:
    path = meta_path(box)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run metadata ({e}); delete it to adopt {Path(box).name} "
                          "as it is") from None


def box_exists(box: Path) -> bool:
    """A box is there: a non-empty file, or a directory with something in it."""
    box = Path(box)
    return any(box.iterdir()) if box.is_dir() else (box.is_file() and box.stat().st_size > 0)


def check_resume(box: str | Path, stage: str, fingerprint: dict[str, Any], *, fresh_hint: str = "") -> bool:
    """Before ``stage`` appends to ``box``: True to resume, False for a new one (else ConfigError)."""
    box = Path(box)
    if not box_exists(box):
        return False
    meta = read_meta(box)
    if meta is None:
        return True  # written before boxes carried their settings: adopted as it is
    changed = diff(meta.get("fingerprint", {}), fingerprint)
    if changed:
        hint = fresh_hint or f"delete {box} (and {meta_path(box).name}) or write elsewhere"
        raise ConfigError(f"{box} was written by {meta.get('stage', stage)} with other settings: "
                          + "; ".join(changed) + f". Resume only with the same settings, or start fresh: {hint}")
    return True


def write_meta(box: str | Path, stage: str, fingerprint: dict[str, Any], *, complete: bool,
               selection: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    data = {"stage": stage, "fingerprint": fingerprint, "complete": complete,
            "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    old = read_meta(box)  # a stage writing its own sidecar keeps the inputs the contract recorded
    if old and "inputs" in old and old.get("fingerprint") == fingerprint and not (extra and "inputs" in extra):
        data["inputs"] = old["inputs"]
    if selection is not None:
        data["selection"] = selection
    if extra:
        data.update(extra)
    atomic_write_text(meta_path(box), json.dumps(data, indent=1, default=str) + "\n")


def recorded_selection(box: str | Path) -> dict[str, Any] | None:
    """The problem selection (a ProblemsConfig as a dict) recorded beside ``box``."""
    return (read_meta(box) or {}).get("selection")


def remove_box(box: str | Path) -> None:
    box = Path(box)
    if box.is_dir():
        shutil.rmtree(box)
    else:
        box.unlink(missing_ok=True)
    for extra in (meta_path(box), box.with_name(box.name + ".summary.json")):
        extra.unlink(missing_ok=True)
