"""The ``coderl execute`` stage: samples.jsonl -> results.jsonl (one Result per sample).

Each sample runs on its problem's hidden tests and on its example tests (``example_passed``). A
problem's records are appended in one flushed write once it is complete, so a killed run loses
only the problems in flight; a rerun skips every record written unless it is *stale* (its
``program_hash`` or job ``hash`` is not what the sample's program, tests, limits and harness give
now): those are dropped and run again. The summary goes to ``<results>.summary.json``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from coderl.execution.outcome import OUTCOMES, Result
from coderl.distributed import make_executor
from coderl.execution.pool import ExecConfig, Executor
from coderl.io import atomic_write_text, write_jsonl
from coderl.records import program_hash, read_results, read_samples, result_writer


def execute(problems: list[Any], samples_path: str | Path, results_path: str | Path,
            config: ExecConfig | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Run every sample in ``samples_path``; append Results to ``results_path``; return the summary."""
    config = config or ExecConfig()
    by_id = {str(p.id): p for p in problems}
    samples = read_samples(samples_path, by_id)
    results_path = Path(results_path)

    counts: Counter[str] = Counter()
    start = time.monotonic()
    with make_executor(config) as ex:
        out = result_writer(results_path)  # locked: no other run writes this file meanwhile
        try:
            if config.time_limit == "calibrated":  # limits first: they are part of each result's hash
                ex.calibrate(by_id[pid] for pid in dict.fromkeys(s.problem_id for s in samples))
            todo, stale = _resume(ex, by_id, samples, results_path)
        except BaseException:
            out.close()
            raise
        if stale:  # the file was replaced: append to (and lock) the new one
            out.close()
            out = result_writer(results_path)
        group_of: dict[str, list[Any]] = {}
        for s in todo:
            group_of.setdefault(s.problem_id, []).append(s)
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="prog", desc="execute", dynamic_ncols=True, disable=not progress)
        # one task per (sample, test set); a problem's records are written once all its tasks are done
        lock = threading.Lock()
        hidden: dict[tuple[str, int], Result] = {}
        example: dict[tuple[str, int], bool] = {}
        tasks = []
        for pid, group in group_of.items():
            problem = by_id[pid]
            for s in group:
                tasks.append((pid, s, "hidden"))
                if problem.example_tests and problem.num_example_tests:
                    tasks.append((pid, s, "example"))
        remaining = Counter(pid for pid, _, _ in tasks)

        def task(t: tuple[str, dict, str]) -> None:
            pid, s, which = t
            r = ex.run(by_id[pid], s.program, which, index=s.index)
            with lock:
                if which == "hidden":
                    hidden[(pid, s.index)] = r
                else:
                    example[(pid, s.index)] = r.outcome == "passed"
                remaining[pid] -= 1
                if remaining[pid]:
                    return
                recs = []
                for sample in group_of[pid]:
                    res = hidden.pop((pid, sample.index))
                    res.example_passed = example.pop((pid, sample.index), None)
                    counts[res.outcome] += 1
                    recs.append({**res.to_dict(), "origin": sample.origin,
                                 "program_hash": program_hash(sample.program)})
                out.write_many(recs)
                bar.update(len(recs))

        try:  # the first error, or Ctrl-C, stops the run at once (what was written stays)
            ex.parallel(task, tasks)
        finally:
            out.close()
            bar.close()
        hits, lookups = (ex.cache.hits, ex.cache.hits + ex.cache.misses) if ex.cache is not None else (0, 0)
        engine = {"isolation": ex.isolation, "time_limit": ex.time_limit_summary(), "backend": ex.backend_info()}
    seconds = time.monotonic() - start
    executed = sum(counts.values())
    summary = {
        "samples": len(samples), "executed": executed, "skipped_already_done": len(samples) - len(todo),
        "stale_reexecuted": stale, "outcomes": {o: counts.get(o, 0) for o in OUTCOMES},
        "pass_rate": counts.get("passed", 0) / executed if executed else 0.0,
        "cache": {"enabled": config.cache_path is not None, "hits": hits, "lookups": lookups,
                  "hit_rate": hits / lookups if lookups else 0.0},
        "seconds": round(seconds, 3), "programs_per_second": round(executed / seconds, 1) if seconds > 0 else 0.0,
        **engine, "results": str(results_path),
    }
    atomic_write_text(str(results_path) + ".summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _resume(ex: Executor, by_id: dict[str, Any], samples: list[Any], results_path: Path) -> tuple[list[Any], int]:
    """The samples still to run, and how many stored results were stale (dropped from the file)."""
    if not results_path.exists() or not results_path.stat().st_size:
        return list(samples), 0
    current = {s.key: s for s in samples}
    kept, done, stale = [], set(), 0
    for r in read_results(results_path, resume=True):
        key = (r["problem_id"], r["index"])
        s = current.get(key)
        if s is not None and (r.get("program_hash") != program_hash(s.program) or
                              r.get("hash") != ex.job_for(by_id[s.problem_id], s.program, "hidden")[2]):
            stale += 1
            continue
        kept.append(r)
        done.add(key)
    if stale:  # readers see the old file or the new one, never a part
        write_jsonl(results_path, kept)
    return [s for s in samples if s.key not in done], stale


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """A rich table of outcomes, then cache and speed."""
    from rich.console import Console
    from rich.table import Column, Table

    console = console or Console()
    stale = summary.get("stale_reexecuted", 0)
    table = Table("outcome", Column("programs", justify="right"), Column("share", justify="right"),
                  title=f"execution: {summary['executed']} run, {summary['skipped_already_done']} already done"
                  + (f", {stale} stale results re-run" if stale else ""))
    n = summary["executed"] or 1
    for o, c in summary["outcomes"].items():
        table.add_row(o, str(c), f"{100 * c / n:.1f}%")
    console.print(table)
    cache = summary["cache"]
    cache_text = f"{100 * cache['hit_rate']:.1f}% ({cache['hits']}/{cache['lookups']})" if cache["enabled"] else "off"
    console.print(f"cache hit rate: {cache_text}   speed: {summary['programs_per_second']} programs/s "
                  f"({summary['seconds']} s)   isolation: {summary['isolation']}", highlight=False)
    tl = summary.get("time_limit") or {}
    if tl.get("mode") == "calibrated":
        console.print(f"time limits: calibrated on {tl['problems']} problems ({tl['measured']} measured now, "
                      f"{tl['from_cache']} from {tl['calibration_file']}, {tl['no_passing_gold']} without a "
                      f"passing gold program: {tl['cap']} s); median {tl['median_limit']} s per test",
                      highlight=False)


def run(problems: list[Any], run, cfg: ExecConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's samples -> its results."""
    return execute(problems, run.samples, run.results, cfg, progress=ctx.progress)


show = print_summary  # how the CLI verb prints the summary
