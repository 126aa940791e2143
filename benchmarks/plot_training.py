"""Curves of a training run from its ``log.jsonl`` (train-actor / train-rl): per step the loss of
each step kind, the RL return and KL where logged, and the validation loss / greedy pass@1.

    python benchmarks/plot_training.py runs/mbpp_smollm2_coderl_cpu/rl/log.jsonl \
        --out benchmarks/learning/rl_curves.png [--label rl-q1=runs/x/rl/log.jsonl ...]

Online RL (``train-online``; its box has ``rounds.jsonl`` and ``log.jsonl``): per round the mean
reward, pass rate, compile-error share and seconds generating / executing; per step the KL to
the starting model, the clipped share and the sampled tokens' negative log-likelihood, and the
validation greedy pass@1 after each round (a run with ``--val-pass-every``):

    python benchmarks/plot_training.py --online group=runs/x/online coderl=runs/y/online --out curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read(path: Path) -> list[dict]:
    recs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass  # a torn last line of a killed run
    return recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="*", help="log.jsonl files, optionally NAME=PATH")
    ap.add_argument("--online", nargs="+", help="train-online boxes (NAME=DIR): per-round curves instead")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.online:
        return plot_online(args.online, Path(args.out), plt)

    panels = [("loss (RL steps)", "rl", "loss"), ("loss (cross-entropy steps)", "ce", "loss"),
              ("mean relative return of the batch", "rl", "return"), ("KL to the start model", "rl", "kl"),
              ("validation loss (gold programs)", None, "loss"), ("validation greedy pass@1", None, "pass@1")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for spec in args.logs:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        name = name or path.parent.name
        recs = read(path)
        for ax, (title, kind, key) in zip(axes.flat, panels):
            if kind is None:
                pts = [(r["step"], r[key]) for r in recs if r.get("event") == "eval" and r.get(key) is not None]
                style = "o-"
            else:
                pts = [(r["step"], r[key]) for r in recs
                       if r.get("event") == "step" and r.get("kind") == kind and r.get(key) is not None]
                style = "-"
            if pts:
                ax.plot(*zip(*pts), style, label=name, lw=1.2, ms=4)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("optimizer step", fontsize=8)
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def plot_online(specs: list[str], out: Path, plt) -> int:
    rounds_panels = [("mean reward of the round's samples", lambda r: r["mean_reward"]),
                     ("pass rate of the round's samples", lambda r: r["pass_rate"]),
                     ("compile-error share", lambda r: r["outcomes"]["compile_error"] / max(1, sum(r["outcomes"].values()))),
                     ("seconds generating (solid) / executing (dashed)", None)]
    step_panels = [("KL to the starting model", "kl"), ("clipped share of tokens", "clipped"),
                   ("sampled tokens' NLL (entropy estimate)", "sample_nll")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
    for spec in specs:
        name, _, path = spec.rpartition("=")
        box = Path(path)
        name = name or box.parent.name
        rounds, log = read(box / "rounds.jsonl"), read(box / "log.jsonl")
        steps = [r for r in log if r.get("event") == "step"]
        for ax, (title, fn) in zip(axes[0], rounds_panels):
            x = [r["round"] for r in rounds]
            if fn is None:
                line, = ax.plot(x, [r.get("generate_s") for r in rounds], "o-", label=name, ms=3)
                ax.plot(x, [r.get("execute_s") for r in rounds], "o--", color=line.get_color(), ms=3)
            else:
                ax.plot(x, [fn(r) for r in rounds], "o-", label=name, ms=3)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("round", fontsize=8)
        for ax, (title, key) in zip(axes[1], step_panels):
            pts = [(r["step"], r[key]) for r in steps if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "-", label=name, lw=1.2)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("optimizer step", fontsize=8)
        pts = [(r["step"], 100 * r["pass@1"]) for r in log if r.get("event") == "eval" and r.get("pass@1") is not None]
        if pts:   # the learning curve: validation after every round (train-online's val_pass_every)
            axes[1][3].plot(*zip(*pts), "o-", label=name, ms=3, color=axes[0][0].lines[-1].get_color())
    axes[1][3].set_title("validation greedy pass@1 (%)", fontsize=10)
    axes[1][3].set_xlabel("optimizer step", fontsize=8)
    if not axes[1][3].lines:
        axes[1][3].axis("off")
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
