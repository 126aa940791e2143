"""Load test of ``coderl serve-executor`` on loopback, against the in-process engine on the same programs.

    nice .venv/bin/python benchmarks/serve.py                       # ~1-2 minutes on 2 cores
    nice .venv/bin/python benchmarks/serve.py --out benchmarks/serve_cpu_<date>.json

The service runs as its own process (``python -m coderl.cli serve-executor``, no token, loopback)
with the same engine settings as the in-process ``Executor`` it is compared with (workers: 2 per
core; time limit 4 s). Programs: HumanEval's canonical solutions, cycled, each made distinct by a
trailing comment (so neither dedup nor a cache can answer for it), one program per request.

1. ``POST /v1/execute`` at concurrency 1, 8 and 32 (client threads): throughput and p50/p99
   latency, and the same programs through ``Executor.run`` on as many threads in this process;
   ratios HTTP / in-process. Every response is checked: one per request, its job hash the one
   computed here for that request's program (a lost, duplicated or crossed response shows), the
   verdict "passed", and the service's program count grown by exactly the requests sent.
2. ``POST /run_code`` (SandboxFusion's shape) at concurrency 8: stdout checked per request.
3. Queue full: a second service with --max-queue 4, its workers first all held by endless programs
   (to their time limit), and 2 x (workers + 4) clients that do not retry: each request gets
   exactly one answer, 200 or 429 (with Retry-After; some must be 429 whatever the core count),
   the service's 429 count equals the clients', nothing is left admitted; then the same load with
   retries completes every request.

Bounded: fixed request counts and a deadline (``--deadline``, default 170 s) after which no new
request is sent (the JSON then says ``stopped_early``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from coderl.execution import ExecConfig, Executor
from coderl.problems import load_problems
from coderl.serve.client import ExecutorClient, ServiceError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execution import machine  # noqa: E402  (benchmarks/execution.py)

ROOT = Path(__file__).resolve().parent.parent


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.hit = False

    def passed(self) -> bool:
        self.hit = self.hit or time.monotonic() > self.end
        return self.hit


def start_service(workers: int, max_queue: int, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    """``coderl serve-executor`` as a child process on a free loopback port; (process, url). Raises
    RuntimeError when its startup line does not appear within ``timeout`` s (or it exits)."""
    cmd = [sys.executable, "-m", "coderl.cli", "serve-executor", "--port", "0", "--workers", str(workers),
           "--max-queue", str(max_queue), "--max-programs", str(min(512, workers + max_queue))]
    env = {k: v for k, v in os.environ.items() if k != "CODERL_SERVE_TOKEN"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # the log, line by line (drained until the service exits)
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline, log = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        log.append(line)
        if "coderl executor on " in line:
            url = line.split("coderl executor on ", 1)[1].split()[0]
            client = ExecutorClient(url)
            while time.monotonic() < deadline:
                try:
                    client.health()
                    return proc, url
                except ServiceError:
                    time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the service did not start within {timeout:.0f} s: {' '.join(cmd)}\n{''.join(log[-20:])}")


def stop_service(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def workload(n: int, offset: int) -> list[tuple]:
    """n distinct (problem, program) pairs: canonical solutions, each with its own comment."""
    he = load_problems("humaneval")
    return [(he[i % len(he)], he[i % len(he)].solutions[0] + f"\n# request {offset + i}\n") for i in range(n)]


def percentiles(latencies: list[float]) -> dict[str, float]:
    s = sorted(latencies)
    if not s:
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(1000 * s[len(s) // 2], 3), "p99_ms": round(1000 * s[min(len(s) - 1, int(len(s) * 0.99))], 3)}


def drive(fn, items: list, concurrency: int, deadline: Deadline) -> tuple[dict, list, float]:
    """``fn(item)`` for every item on ``concurrency`` threads until the deadline; ({index: answer},
    latencies, seconds). An item not sent (deadline) has no answer."""
    answers, latencies, lock = {}, [], threading.Lock()
    todo = iter(range(len(items)))

    def loop() -> None:
        while not deadline.passed():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                answer = fn(items[i])
            except ServiceError as e:
                answer = e
            took = time.perf_counter() - t
            with lock:
                answers[i] = answer
                latencies.append(took)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, latencies, time.perf_counter() - start


def summary(answers: dict, latencies: list, seconds: float) -> dict:
    return {"requests": len(answers), "seconds": round(seconds, 3),
            "throughput_per_s": round(len(answers) / seconds, 2) if seconds else None, **percentiles(latencies)}


def execute_level(url: str, ex: Executor, concurrency: int, n: int, offset: int, deadline: Deadline) -> dict:
    """/v1/execute vs Executor.run at one concurrency; every response checked."""
    items = workload(n, offset)
    hashes = [ex.job_for(p, prog, "hidden")[2] for p, prog in items]
    client = ExecutorClient(url, busy_wait=60)
    before = client.metrics()["programs"]
    answers, lat, secs = drive(lambda it: client.execute(it[0], [it[1]])[0], items, concurrency, deadline)
    after = client.metrics()["programs"]
    errors = [i for i, a in answers.items() if not hasattr(a, "hash")]
    crossed = [i for i, a in answers.items() if hasattr(a, "hash") and (a.hash != hashes[i] or a.problem_id != items[i][0].id)]
    not_passed = [i for i, a in answers.items() if hasattr(a, "outcome") and a.outcome != "passed"]
    sent = len(answers)
    local, llat, lsecs = drive(lambda it: ex.run(it[0], it[1]), items[:sent], concurrency, deadline)
    http, inproc = summary(answers, lat, secs), summary(local, llat, lsecs)
    ratio = {k: round(http[k] / inproc[k], 2) if http[k] and inproc[k] else None
             for k in ("throughput_per_s", "p50_ms", "p99_ms")}
    return {"endpoint": "/v1/execute", "concurrency": concurrency, "http": http, "in_process": inproc,
            "ratio_http_over_in_process": ratio,
            "checks": {"sent": sent, "answered": len(answers), "errors": len(errors), "crossed_or_duplicated": len(crossed),
                       "not_passed": len(not_passed), "service_programs_delta": after - before,
                       "ok": not errors and not crossed and not not_passed and after - before == sent}}


def run_code_level(url: str, concurrency: int, n: int, deadline: Deadline) -> dict:
    client = ExecutorClient(url, busy_wait=60)
    items = [(i, f"{i}\n") for i in range(n)]
    code = "print(2 * int(input()))\n"
    answers, lat, secs = drive(lambda it: client.run_code(code + f"# {it[0]}\n", it[1]), items, concurrency, deadline)
    wrong = [i for i, a in answers.items() if not isinstance(a, dict) or a.get("status") != "Success"
             or a["run_result"]["stdout"] != f"{2 * i}\n"]
    return {"endpoint": "/run_code", "concurrency": concurrency, "http": summary(answers, lat, secs),
            "checks": {"sent": len(answers), "wrong_or_failed": len(wrong), "ok": not wrong}}


def queue_full(workers: int, n: int, deadline: Deadline) -> dict:
    """A service with a 4-program queue under more clients than it admits. First its workers are
    all taken by endless programs (one request, held to the 4 s time limit), so the queue alone
    is left: of the clients (2 x (workers + 4), sized from the worker count, so that some must be
    refused however many cores there are) the first 4 are queued and the rest answered 429."""
    max_queue = 4
    proc, url = start_service(workers, max_queue=max_queue)
    concurrency = 2 * (workers + max_queue)
    try:
        no_retry = ExecutorClient(url, busy_wait=0)
        endless = [f"while True:\n    pass\n# {i}\n" for i in range(workers)]  # (its load never ends)
        problem = load_problems("humaneval")[0]
        blocker = threading.Thread(target=lambda: ExecutorClient(url, busy_wait=60).execute(problem, endless))
        blocker.start()
        held_by = time.monotonic() + 120
        while no_retry.metrics()["in_flight"] < workers:  # every worker holds an endless program
            if time.monotonic() > held_by or not blocker.is_alive():
                raise RuntimeError("the endless programs never held every worker")
            time.sleep(0.01)
        items = workload(n, 10_000_000)
        answers, _, secs = drive(lambda it: no_retry.execute(it[0], [it[1]])[0], items, concurrency, deadline)
        blocker.join()
        ok = sum(1 for a in answers.values() if hasattr(a, "outcome") and a.outcome == "passed")
        busy = sum(1 for a in answers.values() if isinstance(a, ServiceError) and a.status == 429)
        other = len(answers) - ok - busy
        m = no_retry.metrics()
        retry = ExecutorClient(url, busy_wait=60)
        again, _, secs2 = drive(lambda it: retry.execute(it[0], [it[1]])[0], items, concurrency, deadline)
        done = sum(1 for a in again.values() if hasattr(a, "outcome") and a.outcome == "passed")
        m2 = retry.metrics()
        return {"max_queue": max_queue, "workers": workers, "clients": concurrency, "requests": len(answers),
                "without_retry": {"answered_200": ok, "answered_429": busy, "other": other,
                                  "service_429_count": m["rejected"].get("429", 0), "left_admitted": m["admitted"],
                                  "seconds": round(secs, 3)},
                "with_retry": {"requests": len(again), "completed": done, "seconds": round(secs2, 3),
                               "service_429_count_total": m2["rejected"].get("429", 0)},
                "ok": (other == 0 and busy > 0 and ok + busy == len(answers) and m["rejected"].get("429", 0) == busy
                       and m["admitted"] == 0 and done == len(again))}
    finally:
        stop_service(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--deadline", type=float, default=170.0, help="seconds after which no request is sent")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = ap.parse_args()
    deadline, start = Deadline(args.deadline), time.monotonic()
    proc, url = start_service(args.workers, max_queue=1024)
    levels = []
    try:
        with Executor(ExecConfig(workers=args.workers)) as ex:
            ex.run_many([(p, prog, "hidden") for p, prog in workload(64, -64)])  # warm, as the service is
            warm = ExecutorClient(url)
            for p, prog in workload(16, -16):
                warm.execute(p, [prog])
            for i, c in enumerate(args.concurrency):
                levels.append(execute_level(url, ex, c, args.requests, i * args.requests, deadline))
                print(json.dumps(levels[-1]), flush=True)
            isolation = ex.isolation
        levels.append(run_code_level(url, 8, args.requests // 2, deadline))
        print(json.dumps(levels[-1]), flush=True)
    finally:
        stop_service(proc)
    full = queue_full(args.workers, args.requests // 3, deadline)
    print(json.dumps(full), flush=True)
    report = {"benchmark": "serve", "machine": machine(), "isolation": isolation, "workers": args.workers,
              "programs": "HumanEval canonical solutions, one per request, each distinct",
              "levels": levels, "queue_full": full, "stopped_early": deadline.hit,
              "total_seconds": round(time.monotonic() - start, 1),
              "all_checks_ok": all(lv["checks"]["ok"] for lv in levels) and full["ok"] and not deadline.hit}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    sys.exit(0 if report["all_checks_ok"] else 1)


if __name__ == "__main__":
    main()
