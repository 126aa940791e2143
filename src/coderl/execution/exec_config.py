"""The ``execute`` stage's config (beside ``stage.py``): every option of ``coderl execute``.

``ExecConfig`` (the engine and the stage) and its nested ``Limits`` (the rlimits of each program)
are validated when built (:func:`coderl.config.validate`), before any program runs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from coderl.config import check_keys, opt, validate

#: settings that do not change any verdict (resuming or caching under other values is fine)
NOT_FINGERPRINTED = ("workers", "cache_path", "calibration_path", "backend", "ray_address", "ray_actors")


@dataclass
class Limits:
    """Per-program limits, all enforced in the program's process before it runs (soft = hard)."""

    cpu_seconds: int = opt(30, "RLIMIT_CPU: CPU seconds each process of a program may use (lowered "
                           "further to just above the program's wall-clock budget).", ge=1)
    memory_mb: int = opt(2048, "RLIMIT_AS: address space per program process, in MB. At least 256: the interpreter a "
                         "program runs in, with APPS's import block (numpy), already maps ~100 MB before the program's "
                         "first line, so a smaller limit would fail correct programs as if by their own fault.", ge=256)
    file_size_mb: int = opt(16, "RLIMIT_FSIZE: largest file a program may write, in MB (also caps "
                            "stdout/stderr floods).", ge=1)
    max_procs: int = opt(64, "RLIMIT_NPROC: processes of the program's uid (only effective when the "
                         "engine runs as root and drops to a dedicated uid). At least 8: the program, "
                         "its next pre-forked sibling and each stdin/stdout test's process count.", ge=8)
    open_files: int = opt(256, "RLIMIT_NOFILE: open file descriptors per process (at least 16: the "
                          "interpreter and its pipes need a few).", ge=16)

    def __post_init__(self) -> None:
        validate(self, "execution.limits")


@dataclass
class ExecConfig:
    """The execution engine (``Executor``) and the ``execute`` stage."""

    workers: int = opt(0, "Warm worker processes running programs in parallel (0: two per CPU core, at most 64).", ge=0)
    timeout: float = opt(4.0, "Seconds per test case (CodeRL's 4); with time_limit=calibrated, the cap "
                         "of each problem's limit.", gt=0)
    job_timeout: float | None = opt(None, "Seconds per program, all its tests together (default: "
                                    "(per-test limit + 1) x (tests + 1)).", gt=0)
    limits: Limits = opt(factory=Limits, help="Per-program rlimits (execution.limits.*).")
    isolation: str = opt("auto", "Sandbox: bwrap (Linux namespaces through bubblewrap; fails if it is not installed), "
                         "none (rlimits, a dropped uid and a scrubbed environment only), auto (bwrap where installed, "
                         "else none with a loud warning).", choices=("auto", "bwrap", "none"))
    cache_path: str | None = opt(None, "SQLite verdict cache: an identical program on the same tests and "
                                 "limits is never run twice (default: no cache).", flag="--cache")
    early_exit: bool = opt(True, "Stop at the first failing test (CodeRL's trick; the outcome class does "
                           "not depend on it, tests_passed does).")
    apps_preamble: bool = opt(True, "APPS programs get CodeRL's fixed import block (numpy, itertools, "
                              "collections, ...) in their globals.")
    time_limit: str = opt("fixed", "Per-test time limit: fixed (timeout for every problem, as CodeRL) or calibrated "
                          "(per problem: max(calibrate_floor, calibrate_factor x the time of the problem's slowest "
                          "test under its first gold program), at most timeout; measured once per machine and cached; "
                          "problems without a passing gold program keep timeout). The limit used is part of each "
                          "result's hash.", choices=("fixed", "calibrated"))
    calibrate_factor: float = opt(3.0, "time_limit=calibrated: the limit is this many times the gold "
                                  "program's time (evalplus uses 4).", ge=1)
    calibrate_floor: float = opt(0.5, "time_limit=calibrated: the smallest limit, in seconds (room for "
                                 "machine noise on problems whose gold program takes milliseconds).", gt=0)
    calibration_path: str | None = opt(None, "time_limit=calibrated: SQLite file of the measured gold "
                                       "times (default: exec_calibration.sqlite in coderl's cache "
                                       "directory, $CODERL_CACHE or ~/.cache/coderl).")
    max_output_kb: int = opt(1024, "Standard output kept per stdin/stdout test for the comparison, in "
                             "KB; more is a runtime error (output limit).", ge=1)
    backend: str = opt("local", "Where programs run: local (this machine's worker processes) or ray (Ray actors, each "
                       "with its own workers; the driver builds the jobs, keeps the cache and writes every record). "
                       "Verdicts do not depend on it.", choices=("local", "ray"))
    ray_address: str | None = opt(None, "backend=ray: the cluster to join (e.g. auto, or ray://host:10001); "
                                  "default: a local Ray started in this process.")
    ray_actors: int = opt(2, "backend=ray: executor actors (spread over the cluster's nodes); each runs "
                          "`workers` workers (0: two per core of its node).", ge=1)

    def __post_init__(self) -> None:
        for name in ("cache_path", "calibration_path"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.limits, dict):  # ExecConfig(limits={...}) as written in YAML
            self.limits = Limits(**check_keys(Limits, self.limits, "execution.limits"))
        validate(self, "execution")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "execution") -> "ExecConfig":
        """From a mapping (the YAML ``execution:`` section); errors name ``execution.<key>``."""
        return cls(**check_keys(cls, d, where))

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide the verdicts (see ``coderl.config.fingerprint``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_FINGERPRINTED}
