"""The learning scoreboard (``docs/LEARNING.md``): one benchmark every learning stage is
measured with.

    # one model's budget (~2,200 sequences; ~25-35 min on 2 cores), stored as benchmarks/learning/<label>.json
    python benchmarks/learning.py run --model default --label base
    python benchmarks/learning.py run --model runs/x/sft --label sft          # HF dir or LoRA adapter dir
    python benchmarks/learning.py run --model default --label base-seed1 --seed 1 --sets heldout-n10
    # any stored models side by side: paired-bootstrap 95% intervals vs the first, a table and a plot
    python benchmarks/learning.py compare base sft rl --out benchmarks/learning/compare

The sets (each one run directory under ``runs/learning/<label>/<set>/`` with samples, results
and the evaluation report; only the small per-problem JSON is kept in ``benchmarks/``):

| set | problems | programs |
|---|---|---|
| ``mbpp`` | MBPP test, 500, standard prompt (all of ``test_list`` shown) | greedy |
| ``mbpp-heldout`` | the same 500, only the first assert shown; hidden = all | greedy |
| ``humaneval`` | 164 | greedy |
| ``heldout-n10`` | the first 100 of mbpp-heldout | 10 at T=0.8, top-p 0.95 |

Reported per set: greedy pass@1, the outcome mix; on ``heldout-n10``: pass@1, pass@10, 1@10 with
example-test filtering; the hack rate (of the programs that pass the example test, the share
that fails a hidden test) on the held-out sets.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.execution.codes import OUTCOMES  # noqa: E402
from coderl.evaluation.compare import (  # noqa: E402
    ProblemStats, available_metrics, bootstrap_interval, metric_pairs, paired_bootstrap,
    ratio)

STORE = ROOT / "benchmarks" / "learning"


@dataclass(frozen=True)
class EvalSet:
    name: str
    source: str
    end: int | None
    num_seqs: int
    greedy: bool
    metrics: tuple[str, ...]


SETS = {
    "mbpp": EvalSet("mbpp", "mbpp", None, 0, True, ("greedy_pass@1",)),
    "mbpp-heldout": EvalSet("mbpp-heldout", "mbpp-heldout", None, 0, True, ("greedy_pass@1", "hack_rate")),
    "humaneval": EvalSet("humaneval", "humaneval", None, 0, True, ("greedy_pass@1",)),
    "heldout-n10": EvalSet("heldout-n10", "mbpp-heldout", 100, 10, False,
                           ("pass@1", "pass@10", "1@10", "hack_rate")),
}


def run_model(args) -> Path:
    from coderl.evaluation import EvalConfig, evaluate
    from coderl.execution import ExecConfig
    from coderl.execution.stage import execute
    from coderl.generation import GenerationConfig, generate
    from coderl.models import load_model
    from coderl.problems import load_problems

    names = args.sets.split(",") if args.sets else list(SETS)
    bad = [n for n in names if n not in SETS]
    if bad:
        sys.exit(f"unknown set(s) {bad}; expected some of {list(SETS)}")
    run_root = Path(args.runs_dir) / args.label
    t_model = time.time()
    lm = load_model(args.model, threads=args.threads, device=args.device, dtype=args.dtype)
    record = {"label": args.label, "model": args.model, "seed": args.seed,
              "command": "python benchmarks/learning.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": _cpus()},
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": args.device, "sets": {}}
    store = Path(args.store) if args.store else STORE
    out_path = store / f"{args.label}.json"
    if out_path.exists():  # add sets to an earlier record of the same label
        old = json.loads(out_path.read_text())
        if old.get("model") != args.model:
            sys.exit(f"{out_path}: holds model {old.get('model')!r}, not {args.model!r}; use another --label")
        record["sets"] = old.get("sets", {})
    for name in names:
        es = SETS[name]
        t0 = time.time()
        end = min(x for x in (es.end, args.limit) if x) if (es.end or args.limit) else None
        problems = list(load_problems(es.source, split="test", end=end))
        run = run_root / name
        run.mkdir(parents=True, exist_ok=True)
        gcfg = GenerationConfig(model=args.model, num_seqs=es.num_seqs, greedy=es.greedy,
                                batch_size=args.batch_size, temperature=0.8, top_p=0.95,
                                max_new_tokens=256, seed=args.seed, threads=args.threads)
        print(f"[{args.label}] {name}: {len(problems)} problems x "
              f"({es.num_seqs} sampled{' + greedy' if es.greedy else ''})", flush=True)
        gen = generate(problems, run / "samples.jsonl", gcfg, model=lm)
        ex = execute(problems, run / "samples.jsonl", run / "results.jsonl", ExecConfig(timeout=4.0),
                     progress=True)
        report = evaluate(problems, run / "results.jsonl", run,
                          EvalConfig(ks=[1, 10] if es.num_seqs else [1], n_at_k=["1@10"] if es.num_seqs else []),
                          samples_path=run / "samples.jsonl",
                          meta={"model": args.model, "set": name, "seed": args.seed})
        stats = {pid: ProblemStats.from_dict(d) for pid, d in report["per_problem"].items()}
        record["sets"][name] = {
            "problems": len(problems), "num_seqs": es.num_seqs, "greedy": es.greedy,
            "seed": args.seed, "wall_s": round(time.time() - t0, 1), "command": record["command"],
            "generation": {k: gen.get(k) for k in ("sequences", "tokens", "seconds", "tokens_per_s")},
            "execution_s": ex.get("seconds"),
            "metrics": {m: ratio(metric_pairs(stats, m)) for m in es.metrics},
            "outcomes": report["outcomes"],
            "per_problem": {pid: _compact(s) for pid, s in stats.items()},
        }
        record["wall_s"] = round(time.time() - t_model, 1)
        record = store_set(out_path, record, name)
        m = record["sets"][name]["metrics"]
        print(f"[{args.label}] {name}: " + ", ".join(f"{k} {_pct(v)}" for k, v in m.items())
              + f"  ({record['sets'][name]['wall_s']} s)", flush=True)
    print(f"stored {out_path}")
    return out_path


def store_set(out_path: Path, record: dict, name: str) -> dict:
    """Write ``record`` with its set ``name`` to ``out_path``, keeping the sets another process of
    the same label stored meanwhile (two lanes evaluating one model on different sets): the file is
    re-read and replaced under a lock. The record written."""
    import fcntl
    import os

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path.with_name(out_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out_path.exists():
            record["sets"] = {**json.loads(out_path.read_text()).get("sets", {}), name: record["sets"][name]}
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=0) + "\n")
        os.replace(tmp, out_path)
    return record


def _compact(s: ProblemStats) -> dict:
    """The per-problem record without defaults (keeps the stored JSON small)."""
    d = s.to_dict()
    return {k: v for k, v in d.items() if v is not None and not (type(v) is int and v == 0) and v != {}}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def load_record(label: str) -> dict:
    path = Path(label) if label.endswith(".json") else STORE / f"{label}.json"
    if not path.is_file():
        sys.exit(f"{path}: no stored model record (run `python benchmarks/learning.py run --label {label}` first)")
    rec = json.loads(path.read_text())
    for s in rec["sets"].values():
        s["stats"] = {pid: ProblemStats.from_dict(d) for pid, d in s["per_problem"].items()}
    return rec


def compare(args) -> None:
    recs = [load_record(label) for label in args.labels]
    base = recs[0]
    rows = []  # (set, metric, [(value, lo, hi) per model], [Difference vs base per other model])
    for name, es in SETS.items():
        if not all(name in r["sets"] for r in recs):
            continue
        for m in es.metrics:
            pairs = [metric_pairs(r["sets"][name]["stats"], m) for r in recs]
            vals = [(ratio(p), bootstrap_interval(p, resamples=args.resamples, seed=args.seed)) for p in pairs]
            diffs = [paired_bootstrap(pairs[0], p, metric=m, resamples=args.resamples, seed=args.seed)
                     for p in pairs[1:]]
            rows.append((name, m, vals, diffs))
    if not rows:
        sys.exit("the stored models share no evaluation set")
    labels = [r["label"] for r in recs]
    head = ["set", "metric"] + labels + [f"{l} - {labels[0]} [95% CI]" for l in labels[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m, vals, diffs in rows:
        cells = [name, m] + [_pct(v) for v, _ in vals]
        for d in diffs:
            star = " *" if d.significant else ""
            cells.append(f"{_signed(d.diff)} [{_signed(d.low)}, {_signed(d.high)}]{star}")
        lines.append("| " + " | ".join(cells) + " |")
    mix = ["", "Outcome mix (greedy programs; sampled on heldout-n10), % of programs:", "",
           "| set | model | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for name in SETS:
        for r in recs:
            if name not in r["sets"]:
                continue
            oc = r["sets"][name]["outcomes"]["greedy" if SETS[name].greedy else "sampled"]
            tot = max(sum(oc.values()), 1)
            mix.append(f"| {name} | {r['label']} | " + " | ".join(f"{100 * oc[o] / tot:.1f}" for o in OUTCOMES) + " |")
    note = (f"\nPercentages. Intervals: paired bootstrap over problems, {args.resamples} resamples, "
            f"seed {args.seed}; * = the interval excludes 0. hack_rate: of the programs that pass "
            "the example test, the share that fails a hidden test (lower is better).\n")
    text = "\n".join(lines) + "\n" + note + "\n".join(mix) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(str(out) + ".md").write_text(f"# Learning scoreboard: {', '.join(labels)}\n\n" + text)
        data = [{"set": n, "metric": m, "values": {l: {"value": v, "ci": ci} for l, (v, ci) in zip(labels, vals)},
                 "differences": {l: d.to_dict() for l, d in zip(labels[1:], diffs)}} for n, m, vals, diffs in rows]
        Path(str(out) + ".json").write_text(json.dumps(data, indent=1) + "\n")
        _plot(rows, labels, Path(str(out) + ".png"))
        print(f"wrote {out}.md, {out}.json, {out}.png")


def _plot(rows, labels, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) * max(1, len(labels)) / 2), 3.8))
    width = 0.8 / len(labels)
    x = np.arange(len(rows))
    for j, label in enumerate(labels):
        vals = [100 * (r[2][j][0] or 0) for r in rows]
        lo = [100 * ((r[2][j][0] or 0) - (r[2][j][1] or (0, 0))[0]) for r in rows]
        hi = [100 * ((r[2][j][1] or (0, 0))[1] - (r[2][j][0] or 0)) for r in rows]
        ax.bar(x + j * width, vals, width, yerr=[lo, hi], capsize=2, label=label)
    ax.set_xticks(x + width * (len(labels) - 1) / 2, [f"{r[0]}\n{r[1]}" for r in rows], fontsize=7)
    ax.set_ylabel("%")
    ax.set_title("learning scoreboard (95% bootstrap intervals)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _signed(v) -> str:
    return "–" if v is None else f"{100 * v:+.2f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="evaluate one model on the sets; store benchmarks/learning/<label>.json")
    r.add_argument("--model", default="default", help="default | an HF directory | a LoRA adapter directory")
    r.add_argument("--label", required=True, help="name of the stored record")
    r.add_argument("--sets", default="", help=f"comma-separated subset of {list(SETS)} (default: all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--runs-dir", default=str(ROOT / "runs" / "learning"))
    r.add_argument("--limit", type=int, default=0, help="first N problems of each set only (smoke tests)")
    r.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    r.add_argument("--dtype", default="float32")
    r.add_argument("--store", default="", help="where <label>.json goes (default: benchmarks/learning)")
    c = sub.add_parser("compare", help="stored models side by side with paired-bootstrap intervals")
    c.add_argument("labels", nargs="+", help="stored labels (or .json paths); the first is the reference")
    c.add_argument("--out", default="", help="write <out>.md, <out>.json and <out>.png")
    c.add_argument("--resamples", type=int, default=1000)
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run_model(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
