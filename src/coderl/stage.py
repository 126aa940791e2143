"""The stage contract (ARCHITECTURE.md, "The contract"): what every stage declares, and the one
rule (:func:`box_state`: new / complete / resume / stale / changed) that decides whether it runs.
:func:`run_stage` is the only caller of a stage's ``run``; it writes each box's sidecar
(:mod:`coderl.rundir`), whose fresh *stamp* makes the box's readers stale when it is rewritten.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .config import ConfigError, diff, digest, fingerprint as config_fingerprint
from .rundir import RunDir, box_exists, read_meta, remove_box, write_meta


@dataclass(frozen=True)
class Stage:
    name: str                      # the CLI verb and the pipeline's row
    section: str                   # its config section (YAML) and the verb's options
    config: str                    # "module:Class" of its config dataclass
    module: str                    # the module exporting run (and optionally stage_fingerprint, reads, inputs, check)
    reads: tuple[str, ...]         # RunDir boxes it reads
    writes: tuple[str, ...]        # RunDir boxes it writes
    help: str
    optional: bool = True          # the pipeline runs it only when the recipe has its section
    takes_problems: bool = True    # works on the run's problems (else it chooses its own)
    always: bool = False           # run even when complete (cheap, and its output is shown)
    grows: tuple[str, ...] = ()    # settings whose change continues a box instead of refusing it
    shared: tuple[str, ...] = ()   # other sections it uses (execution: validation pass@1)
    files: tuple[tuple[str, str, str], ...] = ()  # CLI: (box, flag, help) to put a box elsewhere
    run_dir_flag: str = "--run-dir"
    incremental: bool = False      # on stale inputs it redoes only what changed (not deleted first)

    def impl(self):
        mod, _, attr = self.module.partition(":")
        m = importlib.import_module(mod)
        return getattr(m, attr) if attr else m

    def config_class(self) -> type:
        mod, _, cls = self.config.partition(":")
        return getattr(importlib.import_module(mod), cls)

    def not_fingerprinted(self) -> tuple[str, ...]:
        """The config's settings that do not decide the output (threads, progress, ...)."""
        return tuple(getattr(sys.modules[self.config_class().__module__], "NOT_FINGERPRINTED", ()))

    def reads_of(self, cfg) -> tuple[str, ...]:
        fn = getattr(self.impl(), "reads", None)
        return tuple(fn(cfg)) if fn is not None else self.reads


@dataclass
class StageContext:
    """What a stage may use besides its own section: shared settings, output, the run's facts."""

    echo: Callable[[str], None] = print
    progress: bool = True
    execution: Any = None              # the run's ExecConfig (execute; validation pass@1)
    base_model: str = "default"        # the model the run starts from (compare-models' "base")
    train_ids: frozenset[str] = frozenset()  # problems the run trains on (never held out)
    selection: dict[str, Any] | None = None  # the problem selection, recorded beside every box
    fresh_hint: str = ""               # how to start fresh, for refusals ({stage}: the stage's name)
    summaries: dict[str, Any] = field(default_factory=dict)  # this invocation's stage summaries
    run_meta: dict[str, Any] = field(default_factory=dict)   # facts for reports (name, generation, timings)

    def __post_init__(self) -> None:
        if self.execution is None:
            from .execution.exec_config import ExecConfig

            self.execution = ExecConfig()


def problems_digest(problems: Sequence) -> str:
    """Which problems, and which prompt variant of each (mbpp and mbpp-heldout share ids)."""
    keys = sorted(f"{p.source}/{p.meta.get('variant') or ''}:{p.id}" for p in problems)
    return digest({"problems": keys})


def default_fingerprint(stage: Stage, problems: Sequence, cfg) -> dict[str, Any]:
    """The config's settings but ``NOT_FINGERPRINTED`` (growing ones kept), and the problems."""
    skip = tuple(k for k in stage.not_fingerprinted() if k not in stage.grows)
    fp = cfg.fingerprint() if hasattr(cfg, "fingerprint") else config_fingerprint(cfg, exclude=skip)
    out = {"config": fp}
    if stage.takes_problems:
        out["problems"] = problems_digest(problems)
    return out


def fingerprint_of(stage: Stage, problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, Any]:
    fn = getattr(stage.impl(), "stage_fingerprint", None)
    return fn(problems, run, cfg, ctx) if fn is not None else default_fingerprint(stage, problems, cfg)


def input_stamps(stage: Stage, problems: Sequence, run: RunDir, cfg, ctx: StageContext) -> dict[str, str]:
    """The stamp of every box the stage reads that exists, and what its ``inputs`` hook adds."""
    fn = getattr(stage.impl(), "inputs", None)
    out = dict(fn(problems, run, cfg, ctx)) if fn is not None else {}
    for name in stage.reads_of(cfg):
        box = run.box(name)
        if box_exists(box):
            st = box.stat()  # a box written by hand (no sidecar): its size and modification time
            out[name] = (read_meta(box) or {}).get("stamp") or f"unstamped:{st.st_size}:{st.st_mtime_ns}"
    return out


def box_state(stage: Stage, run: RunDir, fp: dict, inputs: dict[str, str]) -> tuple[str, list[str]]:
    """(state, reasons) for the stage's boxes: the worst of them (see the module docstring)."""
    order = ["complete", "resume", "new", "stale", "changed"]
    worst, reasons = "complete", []
    for name in stage.writes:
        box = run.box(name)
        meta = read_meta(box)
        if not box_exists(box):
            state, why = "new", []
        elif meta is None:
            state, why = "resume", []  # written before boxes carried settings: adopted as it is
        else:
            why = diff(_flat(meta.get("fingerprint", {})), _flat(fp))
            if any(w.split(":")[0].split(".")[-1] not in stage.grows for w in why):  # not only grown settings
                state = "changed"
            elif "inputs" in meta and meta["inputs"] != inputs:
                state, why = "stale", [f"{k} was rewritten" for k in sorted(set(meta["inputs"]) | set(inputs))
                                       if meta["inputs"].get(k) != inputs.get(k)]
            elif why or not meta.get("complete"):
                state = "resume"
            else:
                state = "complete"
        if order.index(state) > order.index(worst):
            worst, reasons = state, why
    return worst, reasons


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested fingerprints as ``a.b`` keys (a config's own without a prefix), as users write them."""
    out = {}
    for k, v in d.items():
        key = "" if (k == "config" and not prefix) else f"{prefix}{k}."
        if isinstance(v, dict):
            out.update(_flat(v, key))
        else:
            out[prefix + k] = v
    return out


def run_stage(stage: Stage, problems: Sequence, run: RunDir, cfg, ctx: StageContext, *,
              redo: bool = False, header: str | None = None) -> dict[str, Any] | None:
    """Run ``stage`` under the contract; None when skipped as complete."""
    header = header or stage.name
    check = getattr(stage.impl(), "check", None)  # what the settings must agree with, before any box is touched
    if check is not None:
        check(problems, run, cfg, ctx)
    fp = fingerprint_of(stage, problems, run, cfg, ctx)
    inputs = input_stamps(stage, problems, run, cfg, ctx)
    state, reasons = box_state(stage, run, fp, inputs)
    if state == "complete" and not redo and not stage.always:
        ctx.echo(f"{header}: complete under the same settings and inputs, skipped")
        return None
    if header != stage.name:
        ctx.echo(header)
    if state == "changed" and not redo:
        where = ", ".join(str(run.box(b)) for b in stage.writes)
        raise ConfigError(f"{where}: written by {stage.name} under other settings: " + "; ".join(reasons)
                          + ". Resume only with the same settings, or start fresh: "
                          + (ctx.fresh_hint or "--fresh").replace("{stage}", stage.name))
    if state == "stale" and not redo:
        ctx.echo(f"      {stage.name}: " + "; ".join(reasons) + " since it ran: "
                 + ("redoing what changed" if stage.incremental else "redoing it"))
    if (state == "stale" and not stage.incremental) or (redo and state != "new"):
        if redo:
            ctx.echo(f"      {stage.name}: starting again (its outputs are deleted)")
        for b in stage.writes:
            remove_box(run.box(b))

    def mark(complete: bool, **extra) -> None:
        for b in stage.writes:
            write_meta(run.box(b), stage.name, fp, complete=complete, selection=ctx.selection,
                       extra={"inputs": inputs, **extra})

    mark(False)
    summary = stage.impl().run(problems, run, cfg, ctx)
    mark(bool(summary.get("complete", True)), stamp=uuid.uuid4().hex[:16])
    return summary
