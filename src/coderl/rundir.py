"""``runs/<name>/``: the name of every file a run holds, and what produced each of them.

Every box (a stage's output file) has a sidecar ``<box>.meta.json`` written by the stage that made
it: the stage's name, the *fingerprint* of the settings that decide its content, whether it is
complete, and the run's problem selection. A stage that finds its box already there resumes only
under the same fingerprint; otherwise it stops with :class:`~coderl.config.ConfigError` saying
which settings differ and how to start fresh. ``coderl execute`` / ``coderl evaluate`` run by hand
read the selection recorded beside the samples, so they cannot disagree with ``generate`` about
which problems a run holds.
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
    """The files of one run directory (only these names; stages never build paths by hand).

    ``run.samples``, ``run.box("samples")``: a box's path. ``files`` puts some boxes elsewhere
    (the CLI's ``--samples FILE``, ``--out FILE``); their sidecars go beside them."""

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
        """A model setting as a spec: ``sft`` / ``rl`` name this run's models, anything else is
        itself (so a recipe run under another name, or a copied run, uses its own models)."""
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
    """Before ``stage`` appends to ``box``: True when there is something to resume (same
    settings), False when the box is new. Different settings -> ConfigError naming them."""
    box = Path(box)
    if not box_exists(box):
        return False
    meta = read_meta(box)
    if meta is None:
        return True  # written before boxes carried their settings: adopted as it is
    old = meta.get("fingerprint", {})
    changed = diff(old, fingerprint)
    if changed:
        hint = fresh_hint or f"delete {box} (and {meta_path(box).name}) or write elsewhere"
        raise ConfigError(f"{box} was written by {meta.get('stage', stage)} with other settings: "
                          + "; ".join(changed) + f". Resume only with the same settings, or start "
                          f"fresh: {hint}")
    return True


def write_meta(box: str | Path, stage: str, fingerprint: dict[str, Any], *, complete: bool,
               selection: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    data = {"stage": stage, "fingerprint": fingerprint, "complete": complete,
            "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    old = read_meta(box) if meta_path(box).is_file() else None
    for key in ("inputs",):  # a stage writing its own sidecar keeps the inputs the contract recorded
        if old and key in old and old.get("fingerprint") == fingerprint and not (extra and key in extra):
            data[key] = old[key]
    if selection is not None:
        data["selection"] = selection
    if extra:
        data.update(extra)
    atomic_write_text(meta_path(box), json.dumps(data, indent=1, default=str) + "\n")


def recorded_selection(box: str | Path) -> dict[str, Any] | None:
    """The problem selection (a ProblemsConfig as a dict) recorded beside ``box``."""
    meta = read_meta(box)
    return (meta or {}).get("selection")


def remove_box(box: str | Path) -> None:
    box = Path(box)
    if box.is_dir():
        shutil.rmtree(box)
    elif box.exists():
        box.unlink()
    for extra in (meta_path(box), box.with_name(box.name + ".summary.json")):
        if extra.exists():
            extra.unlink()
