"""Execution on Ray vs the local pool (issue 17), on this machine, all in one run:

    .venv/bin/python benchmarks/scale.py [--problems 100] [--repeats 2] [--store benchmarks]

1. **Throughput**: the same programs (MBPP train reference programs, a broken, a wrong and a
   crashing variant of each: 4 per problem) through ``Executor.run_many`` with the local pool
   and with ``execution.backend: ray`` at 1, 2 and 4 actors (the same number of sandbox workers
   in total: the local pool's), best of ``--repeats``; the ratio to the local pool of the same run.
   The verdicts are compared too (they must be the same).
2. **Overhead per task**: a trivial program run one at a time (one thread), local vs Ray: the
   difference of the medians is what a Ray round trip adds to each program.
3. **A two-node cluster on this machine**: a head and a worker started with ``ray start`` (one
   CPU each), then ``coderl generate --backend ray --ray-address <head>`` (the bundled model on
   two replicas, a few MBPP problems; the samples compared with a local ``generate``'s) and
   ``coderl execute --backend ray --ray-address <head>`` end to end; the actors' nodes are listed;
   the cluster is stopped after.

On 2 cores speed-up is not the point: overhead, correctness and recovery are (tests/test_ray_backend.py
pins the records and the recovery). Results: ``benchmarks/scale_<date>.json`` and a table printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.distributed import make_executor  # noqa: E402
from coderl.execution import ExecConfig  # noqa: E402
from coderl.problems import load_problems  # noqa: E402


def programs(n: int) -> list[tuple]:
    out = []
    for p in load_problems("mbpp", split="train", end=n):
        gold = p.solutions[0]
        out += [(p, gold, "hidden"), (p, "def broken(:\n", "hidden"),
                (p, gold.replace("return", "return None and", 1), "hidden"), (p, "raise ValueError('x')\n", "hidden")]
    return out


def throughput(items: list, cfg: ExecConfig, repeats: int) -> dict:
    best, verdicts, start_s = None, None, None
    for _ in range(repeats):
        t0 = time.monotonic()
        with make_executor(cfg) as ex:
            started = time.monotonic()
            t = time.monotonic()
            res = ex.run_many(items)
            secs = time.monotonic() - t
            nodes = getattr(ex, "nodes", [])
        start_s = round(started - t0, 2)
        verdicts = [(r.outcome, r.tests_passed) for r in res]
        best = secs if best is None else min(best, secs)
    return {"seconds": round(best, 3), "programs_per_s": round(len(items) / best, 1), "start_seconds": start_s,
            "verdicts": verdicts, "nodes": sorted(set(nodes))}


def overhead(cfg: ExecConfig, n: int) -> dict:
    p = load_problems("mbpp", split="train", end=1)[0]
    with make_executor(cfg) as ex:
        job = ex.job_for(p, "x = 1\n", "hidden")
        ex._dispatch(job[0], job[1])  # warm
        times = []
        for _ in range(n):
            t = time.perf_counter()
            ex._dispatch(job[0], job[1])
            times.append(time.perf_counter() - t)
    return {"median_ms": round(1000 * statistics.median(times), 2), "p90_ms": round(1000 * sorted(times)[int(0.9 * n)], 2)}


class _Skip(Exception):
    pass


def two_nodes(port: int, problems: int, threads: int) -> dict:
    """ray start a head and a worker (1 CPU each), generate and execute on the cluster (the samples
    compared with the local backend's)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="coderl_scale_"))
    head = f"127.0.0.1:{port}"
    try:
        t = time.monotonic()
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=180)
        subprocess.run([ray_bin, "start", f"--address={head}", "--num-cpus=1", "--disable-usage-stats"],
                       check=True, capture_output=True, env=env, timeout=180)
        for _ in range(60):  # the worker's raylet registers with the head after `ray start` returns
            status = subprocess.run([ray_bin, "status", f"--address={head}"], capture_output=True, text=True,
                                    env=env, timeout=60).stdout
            if status.count("node_") >= 2:
                break
            time.sleep(2)
        out["cluster_start_s"] = round(time.monotonic() - t, 1)
        out["ray_status_nodes"] = status.count("node_")
        cli = [sys.executable, "-m", "coderl.cli"]
        gen = cli + ["generate", "--problems", "mbpp", "--split", "test", "--end", str(problems), "--num-seqs", "2",
                     "--max-new-tokens", "96", "--threads", str(threads)]
        t = time.monotonic()
        g = subprocess.run(gen + ["--out", str(tmp / "samples.jsonl"), "--backend", "ray", "--ray-address", head,
                                  "--ray-actors", "2"], capture_output=True, text=True, env=env, timeout=1800)
        out["generate_s"] = round(time.monotonic() - t, 1)
        out["generate_rc"] = g.returncode
        if g.returncode:
            out["generate_error"] = g.stderr[-800:]
            return out
        try:  # the verb prints its summary (JSON) last: where the replicas ran
            out["generate_backend"] = json.loads(g.stdout[g.stdout.index("{"):]).get("backend")
        except ValueError:
            out["generate_backend"] = None
        t = time.monotonic()  # the same samples decoded here, by the local backend
        subprocess.run(gen + ["--out", str(tmp / "local.jsonl")], check=True, capture_output=True, env=env,
                       timeout=1800)
        out["generate_local_s"] = round(time.monotonic() - t, 1)
        rows = lambda f: {(r["problem_id"], r["index"]): r["raw"] for r in map(json.loads, f.read_text().splitlines())}
        out["samples"] = len(rows(tmp / "samples.jsonl"))
        out["samples_equal_local"] = rows(tmp / "samples.jsonl") == rows(tmp / "local.jsonl")
        t = time.monotonic()
        r = subprocess.run(cli + ["execute", "--samples", str(tmp / "samples.jsonl"), "--out",
                                  str(tmp / "results.jsonl"), "--backend", "ray", "--ray-address", head,
                                  "--ray-actors", "2", "--workers", "2"],
                           capture_output=True, text=True, env=env, timeout=600)
        out["execute_s"] = round(time.monotonic() - t, 1)
        out["execute_rc"] = r.returncode
        if r.returncode:
            out["execute_error"] = r.stderr[-800:]
        summary = json.loads((tmp / "results.jsonl.summary.json").read_text()) if r.returncode == 0 else {}
        out["programs"] = summary.get("executed")
        out["outcomes"] = summary.get("outcomes")
        out["backend"] = summary.get("backend")
        import ray  # the actors' nodes, from a short session on the same cluster
        ray.init(address=head, log_to_driver=False)
        out["alive_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
        ray.shutdown()
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=100, help="MBPP train problems (4 programs each)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--overhead-jobs", type=int, default=100)
    ap.add_argument("--cluster-problems", type=int, default=4, help="problems generated for the two-node run")
    ap.add_argument("--port", type=int, default=6391)
    ap.add_argument("--parts", default="throughput,cluster", help="throughput (with the overhead), cluster")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the cluster run's generation")
    ap.add_argument("--store", default=str(ROOT / "benchmarks"))
    args = ap.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    items = programs(args.problems)
    workers = 2 * (os.cpu_count() or 1)
    res: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "ray": ray.__version__, "programs": len(items), "workers_total": workers,
                 "date": time.strftime("%Y-%m-%d"), "throughput": {}}
    parts = set(args.parts.split(","))
    if "throughput" in parts:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        if "throughput" not in parts:
            raise _Skip
        local = throughput(items, ExecConfig(workers=workers), args.repeats)
        res["throughput"]["local"] = local
        for actors in (1, 2, 4):
            cfg = ExecConfig(workers=max(1, workers // actors), backend="ray", ray_actors=actors)
            r = throughput(items, cfg, args.repeats)
            r["same_verdicts"] = r.pop("verdicts") == local["verdicts"]
            r["ratio_to_local"] = round(r["programs_per_s"] / local["programs_per_s"], 3)
            res["throughput"][f"ray_{actors}"] = r
        local.pop("verdicts")
        res["overhead"] = {"local": overhead(ExecConfig(workers=1), args.overhead_jobs),
                           "ray": overhead(ExecConfig(workers=1, backend="ray", ray_actors=1), args.overhead_jobs)}
        res["overhead"]["ray_minus_local_ms"] = round(res["overhead"]["ray"]["median_ms"]
                                                      - res["overhead"]["local"]["median_ms"], 2)
    except _Skip:
        pass
    finally:
        ray.shutdown()
    if "cluster" in parts:
        res["two_nodes"] = two_nodes(args.port, args.cluster_problems, args.threads)
    path = Path(args.store) / f"scale_{res['date']}.json"
    if path.is_file():  # parts run apart land in one record
        res = {**json.loads(path.read_text()), **{k: v for k, v in res.items() if v or k not in ("throughput",)}}
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"| engine | programs/s | x local | start s | same verdicts |\n|---|---|---|---|---|")
    for k, v in res.get("throughput", {}).items():
        print(f"| {k} | {v['programs_per_s']} | {v.get('ratio_to_local', 1.0)} | {v['start_seconds']} | "
              f"{v.get('same_verdicts', '-')} |")
    print(f"overhead per task: {res.get('overhead')}")
    if "two_nodes" in res:
        print(f"two nodes: {res['two_nodes']}")
    print(f"stored: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
