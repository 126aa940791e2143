"""Validation greedy pass@1 along a training run: one point per checkpoint.

A training stage selects its model by validation loss (or by a pass@1 check on a few problems).
This measures what the loss stands in for — how many validation problems the greedy program
solves — at each kept checkpoint, so a run that moves the loss but not the programs shows it.

    # a run's checkpoints (a LoRA adapter or an HF directory each; train with a large
    # keep_checkpoints so they stay), plus its start model at step 0
    python benchmarks/checkpoint_curve.py run --label orl-mean --start runs/x/sft \\
        runs/x/rl/checkpoints/step-000025 runs/x/rl/checkpoints/step-000050 ...
    python benchmarks/checkpoint_curve.py plot orl-mean sft-curve    # one figure, several runs

Each point is MBPP validation (the split the training stages validate on; never the test
problems), greedy, the default prompt. ``--source humaneval`` measures HumanEval (its 164 test
problems) instead, to show what a run does to a set it does not train on — a curve to read, never
one to select a checkpoint by. Stored in ``benchmarks/learning/curve_<label>.json``
(resumable: a point already stored for the same weights is not run again) and plotted to
``benchmarks/learning/curve_<label>.png`` with a 95% bootstrap interval per point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
STORE = ROOT / "benchmarks" / "learning"


def _step(path: Path) -> int:
    info = path / "coderl_training.json"
    if info.is_file():
        step = json.loads(info.read_text()).get("step")
        if isinstance(step, int):
            return step
    digits = "".join(ch for ch in path.name if ch.isdigit())
    if not digits:
        sys.exit(f"{path}: no step (no coderl_training.json with a step, no digits in the name)")
    return int(digits)


def _digest(path: Path) -> str:
    """The weights' identity: a point is rerun when its checkpoint's weights changed."""
    if not path.is_dir():  # a model name (default, a .gguf file): its spec
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        sys.exit(f"{path}: no *.safetensors weights (a checkpoint or model directory was expected)")
    h = hashlib.sha256()
    for f in weights:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def _interval(passed: list[int], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(passed)
    means = sorted(sum(passed[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def run(args) -> None:
    from coderl.execution import ExecConfig
    from coderl.execution.codes import PASSED
    from coderl.execution.stage import execute
    from coderl.generation import GenerationConfig, generate
    from coderl.models import load_model
    from coderl.problems import load_problems
    from coderl.records import join

    split = args.split or ("test" if args.source == "humaneval" else "validation")
    if args.source == "humaneval" and split != "test":
        sys.exit(f"--split {split}: HumanEval has one split, test")
    problems = list(load_problems(args.source, split=split, end=args.limit))
    out = Path(args.store) / f"curve_{args.label}.json"
    record = json.loads(out.read_text()) if out.is_file() else {"label": args.label, "points": []}
    if out.is_file() and (record.get("source", "mbpp"), record.get("split"), record.get("problems")) != (
            args.source, split, len(problems)):  # (files written before --source are mbpp's)
        sys.exit(f"{out}: holds points on another problem selection; use another --label")
    record.update(source=args.source, split=split, problems=len(problems), command="python benchmarks/checkpoint_curve.py "
                  + " ".join(sys.argv[1:]))
    todo = [(0, Path(args.start))] if args.start else []
    todo += sorted(((_step(Path(c)), Path(c)) for c in args.checkpoints), key=lambda x: x[0])
    if not todo:
        sys.exit("nothing to measure: give checkpoint directories and/or --start")
    steps = [step for step, _ in todo]
    if len(set(steps)) < len(steps):
        sys.exit(f"two models at one step: {sorted(todo)}")
    for step, path in todo:
        if not path.is_dir() and step:
            sys.exit(f"{path}: not a model directory")
        digest = _digest(path)
        done = [p for p in record["points"] if p["step"] == step]
        if done and done[0]["digest"] == digest:
            print(f"step {step}: stored ({done[0]['pass@1']:.1%})", flush=True)
            continue
        t0 = time.time()
        lm = load_model(str(path), threads=args.threads, device="cpu")
        work = Path(args.runs_dir) / args.label / f"step-{step:06d}-{digest}"  # other weights: other samples
        work.mkdir(parents=True, exist_ok=True)
        gcfg = GenerationConfig(model=str(path), num_seqs=0, greedy=True, batch_size=args.batch_size,
                                max_new_tokens=256, threads=args.threads, progress=False)
        generate(problems, work / "samples.jsonl", gcfg, model=lm)
        execute(problems, work / "samples.jsonl", work / "results.jsonl", ExecConfig(timeout=4.0), progress=False)
        pairs = join(work / "samples.jsonl", work / "results.jsonl", [str(p.id) for p in problems])
        outcomes = dict(Counter(r["outcome"] for _, r in pairs))  # the whole file's, resumed or not
        passed = {str(s.problem_id): int(r["outcome"] == PASSED) for s, r in pairs}
        per = [passed.get(str(p.id), 0) for p in problems]
        lo, hi = _interval(per)
        point = {"step": step, "model": str(path), "digest": digest, "pass@1": sum(per) / len(per),
                 "ci95": [lo, hi], "outcomes": outcomes, "passed": sorted(k for k, v in passed.items() if v),
                 "seconds": round(time.time() - t0, 1)}
        record["points"] = sorted([p for p in record["points"] if p["step"] != step] + [point],
                                  key=lambda p: p["step"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(out)
        print(f"step {step}: pass@1 {point['pass@1']:.1%} [{lo:.1%}, {hi:.1%}]  ({point['seconds']} s)", flush=True)
        del lm
    plot(argparse.Namespace(labels=[args.label], store=args.store, out=None))


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label in args.labels:
        rec = json.loads((Path(args.store) / f"curve_{label}.json").read_text())
        pts = rec["points"]
        xs = [p["step"] for p in pts]
        ys = [100 * p["pass@1"] for p in pts]
        lo = [100 * (p["pass@1"] - p["ci95"][0]) for p in pts]
        hi = [100 * (p["ci95"][1] - p["pass@1"]) for p in pts]
        where = f"{rec.get('source', 'mbpp')} {rec['split']}, {rec['problems']} problems"
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{label} ({where})")
    ax.set_xlabel("optimizer step (0: the start model)")
    ax.set_ylabel("greedy pass@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(args.out) if args.out else Path(args.store) / f"curve_{'_'.join(args.labels)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="greedy pass@1 on MBPP validation (or HumanEval) at each checkpoint")
    r.add_argument("checkpoints", nargs="*", help="checkpoint directories (LoRA adapter or HF model)")
    r.add_argument("--label", required=True)
    r.add_argument("--start", help="the run's start model, plotted at step 0")
    r.add_argument("--source", default="mbpp", choices=("mbpp", "humaneval"))
    r.add_argument("--split", default=None, help="default: validation for mbpp, test for humaneval")
    r.add_argument("--limit", type=int, default=None, help="first N problems only (smoke tests)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--runs-dir", default="runs/curves")
    r.add_argument("--store", default=str(STORE))
    p = sub.add_parser("plot", help="one figure of stored curves")
    p.add_argument("labels", nargs="+")
    p.add_argument("--store", default=str(STORE))
    p.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "run" and args.limit is not None and args.limit < 1:
        ap.error("--limit: at least 1")
    run(args) if args.cmd == "run" else plot(args)


if __name__ == "__main__":
    main()
