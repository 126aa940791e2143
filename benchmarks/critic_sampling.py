"""Critic sampling vs plain sampling at an equal budget of generated programs per problem
(issue 18; ``docs/LEARNING.md``, "Equal budgets").

    # 1. the binary critic and the repair model, from an executed train run (MBPP train, the
    #    actor's own programs: configs/mbpp_smollm2_critic_cpu.yaml up to execute)
    python benchmarks/critic_sampling.py prepare --train-run runs/mbpp_smollm2_critic_cpu --out runs/cs_bench
    # 2. every variant on the first 100 problems of mbpp-heldout and all of HumanEval
    python benchmarks/critic_sampling.py run --out runs/cs_bench --label cpu
    # (or in parallel processes: run --variants plain / --variants refine,repair-self,repair,both
    #  --no-report per set, then `report` builds the table; benchmarks/gpu_critic_sampling.sh)
    # On 2 CPU cores: two 1-thread lanes (--threads 1), a shorter repair training
    # (--repair-max-pairs 1 --repair-epochs 1: 47 steps, ~45 min at one thread) and the runs split between the
    # lanes (RESULTS.md, "Critic sampling (issue 18), fourth session")

Variants (each a ``critic-sample`` box under ``<out>/<set>/<variant>/``; ``--budget`` B programs
per problem, all counted; the first B/2 shared by the round-based variants, drawn once):

| variant | programs |
|---|---|
| ``plain`` | B samples; submit: example-passing ones ranked by the critic (the strongest plain baseline) |
| ``refine`` | B/2 samples, then B/2 continuations of critic-chosen prefixes of example-passing programs (fresh samples where a problem has none) |
| ``refine-failed`` | the same, refining every program (failed ones too) |
| ``repair-self`` | B/2 samples, then B/2 repairs of failed programs by the actor with a repair prompt |
| ``repair`` | the same, by the trained repair model |
| ``both`` | B/2 samples, then refinements and repairs (trained model) in turn |

Reported per set and variant: 1@B, 5@B (of the submission), pass@B (any program), hack rate,
programs and generated tokens, where the budget went (per round and origin: programs, example
passes, of those hidden passes), and the paired-bootstrap difference to ``plain`` over problems.
Stored as ``benchmarks/critic_sampling_<label>.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.critic_sampling import CriticSamplingConfig  # noqa: E402
from coderl.critic_sampling.cs_stage import EXAMPLES, ROUNDS, SAMPLES, critic_sample  # noqa: E402
from coderl.evaluation.compare import paired_bootstrap  # noqa: E402
from coderl.execution.exec_config import ExecConfig  # noqa: E402
from coderl.rundir import RunDir  # noqa: E402

SETS = {"mbpp-heldout": ("mbpp-heldout", "test", 100), "humaneval": ("humaneval", "test", None)}
VARIANTS = {"plain": dict(refine=False, repair="none"), "refine": dict(refine=True, repair="none"),
            "refine-failed": dict(refine=True, refine_failed=True, repair="none"),
            "repair-self": dict(refine=False, repair="self"), "repair": dict(refine=False, repair="MODEL"),
            "both": dict(refine=True, repair="MODEL")}


def prepare(args) -> None:
    from coderl.critic import CriticConfig
    from coderl.critic.critic_trainer import train_critic
    from coderl.critic_sampling.repair_config import RepairConfig
    from coderl.critic_sampling.repair_trainer import train_repair
    from coderl.problems import load_problems

    train = RunDir(args.train_run)
    ids = {json.loads(l)["problem_id"] for l in train.samples.read_text().splitlines() if l.strip()}
    problems = [p for p in load_problems("mbpp", split="train") if p.id in ids]
    out = Path(args.out)
    parts = set(args.parts.split(","))
    t = time.time()
    if "critic" in parts:
        train_critic(problems, out / "critic_run", CriticConfig(
            model=args.model, num_classes=2, mode=args.critic_mode, include_gold=args.include_gold,
            epochs=args.critic_epochs, val_fraction=0.15, device=args.device, progress=False, bootstrap=200,
            threads=args.threads),
            samples_path=train.samples, results_path=train.results)
        print(f"critic: {time.time() - t:.0f}s", flush=True)
    if "repair" not in parts:
        return
    t = time.time()
    repair_run = RunDir(out / "repair_run").mkdir()
    for name in ("samples", "results"):
        if not repair_run.box(name).exists():
            shutil.copy(train.box(name), repair_run.box(name))
    train_repair(problems, repair_run, RepairConfig(
        model=args.model, epochs=args.repair_epochs, batch_size=args.repair_batch, grad_accum=args.repair_grad_accum,
        max_pairs=args.repair_max_pairs, device=args.device, mixed_precision=args.mixed_precision,
        save_every=args.repair_save_every, progress=False, threads=args.threads))
    print(f"repair: {time.time() - t:.0f}s", flush=True)


def _cfg(args, variant: str, set_name: str) -> CriticSamplingConfig:
    source, split, end = SETS[set_name]
    if args.limit:
        end = min(end or args.limit, args.limit)
    v = dict(VARIANTS[variant])
    if v["repair"] == "MODEL":
        v["repair"] = str(Path(args.out) / "repair_run" / "repair")
    plain = variant == "plain"
    return CriticSamplingConfig(
        model=args.model, critic=str(Path(args.out) / "critic_run" / "critic" / "best"),
        budget=args.budget, first=args.budget if plain else args.budget // 2, rounds=0 if plain else 1,
        submit=5, source=source, split=split, end=end, seed=args.seed, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, progress=False, threads=args.threads, **v)


def _share_first_round(src: Path, dst: Path, wait: float = 1800) -> None:
    """Start ``dst`` from ``src``'s first round (the same B/2 samples and example verdicts),
    waiting for another process to finish it."""
    if (dst / ROUNDS).is_file():
        return
    t = time.time()
    while not ((src / ROUNDS).is_file() and (src / ROUNDS).read_text().strip()):
        if time.time() - t > wait:
            raise SystemExit(f"{src}: its first round did not appear within {wait:.0f}s")
        time.sleep(2)
    dst.mkdir(parents=True, exist_ok=True)
    first = (src / ROUNDS).read_text().splitlines()[0]
    keep = [l for l in _lines(src / SAMPLES) if json.loads(l)["meta"]["round"] == 0]
    keys = {(json.loads(l)["problem_id"], json.loads(l)["index"]) for l in keep}
    ex = [l for l in _lines(src / EXAMPLES) if (json.loads(l)["problem_id"], json.loads(l)["index"]) in keys]
    (dst / SAMPLES).write_text("\n".join(keep) + "\n")
    (dst / EXAMPLES).write_text("\n".join(ex) + ("\n" if ex else ""))
    (dst / ROUNDS).write_text(first + "\n")


def _check_settings(box: Path, cfg: CriticSamplingConfig, exec_cfg: ExecConfig) -> None:
    """``critic_sample`` is called directly here (not through the stage contract): a box keeps
    the settings, critic and repair model it was made with, and another run under other ones is
    refused instead of reporting the old programs under new labels."""
    from coderl.config import diff, fingerprint
    from coderl.critic_sampling.cs_config import NOT_FINGERPRINTED
    from coderl.evaluation.models_stage import model_digest

    now = {**fingerprint(cfg, exclude=NOT_FINGERPRINTED), "execution": exec_cfg.fingerprint(),
           "critic_digest": model_digest(cfg.critic),
           "repair_digest": model_digest(cfg.repair) if Path(cfg.repair).is_dir() else cfg.repair}
    path = box / "bench_settings.json"
    if path.is_file():
        changed = diff(json.loads(path.read_text()), json.loads(json.dumps(now, default=str)))
        if changed:
            raise SystemExit(f"{box}: made under other settings ({'; '.join(changed)}); delete it or use "
                             "another --out")
    box.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1, default=str) + "\n")


def _lines(path: Path) -> list[str]:
    """Whole JSON lines (the other process may be appending a later round's records)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        out.append(line)
    return out


def run(args) -> None:
    out = Path(args.out)
    exec_cfg = ExecConfig(timeout=args.timeout)
    variants = args.variants.split(",")
    firsts = [args.first_from] if args.first_from else [v for v in variants if v != "plain"]
    for set_name in args.sets.split(","):
        for variant in variants:
            t = time.time()
            box = out / set_name / variant
            if variant != "plain" and variant != firsts[0]:
                _share_first_round(out / set_name / firsts[0] / "critic_sampling", box / "critic_sampling")
            cfg = _cfg(args, variant, set_name)
            _check_settings(box, cfg, exec_cfg)
            critic_sample(RunDir(box), cfg, exec_cfg, progress=False,
                          echo=lambda s: print(f"  [{set_name}/{variant}] {s.strip()}", flush=True))
            rep = json.loads((box / "critic_sampling" / "report.json").read_text())
            print(f"{set_name}/{variant}: {rep['summary']} ({time.time() - t:.0f}s)", flush=True)
    if not args.no_report:
        report(args)


def report(args) -> None:
    """The table of every variant found under ``--out`` (runs of ``run``, here or elsewhere)."""
    out = Path(args.out)
    table = {"label": args.label, "budget": args.budget, "seed": args.seed, "machine": platform.node(),
             "device": args.device, "command": " ".join(sys.argv), "sets": {}}
    for set_name in args.sets.split(","):
        reports = {}
        for variant in VARIANTS:
            path = out / set_name / variant / "critic_sampling" / "report.json"
            if path.is_file():
                reports[variant] = json.loads(path.read_text())
        if reports:
            table["sets"][set_name] = _compare(reports, args.budget)
    Path(args.store).mkdir(parents=True, exist_ok=True)
    path = Path(args.store) / f"critic_sampling_{args.label}.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    path.with_suffix(".md").write_text(render(table))
    print(render(table))


def _compare(reports: dict, budget: int) -> dict:
    ref = reports.get("plain")
    out = {}
    for variant, rep in reports.items():
        row = {"summary": rep["summary"], "budget_use": rep["budget_use"], "bases": rep["bases"],
               "per_problem": {pid: {k: v for k, v in p.items() if "@" in k} for pid, p in rep["per_problem"].items()}}
        if ref is not None and variant != "plain":
            row["vs_plain"] = {}
            for metric in (f"1@{budget}", f"5@{budget}", f"pass@{budget}"):
                a = {pid: (float(p[metric]), 1.0) for pid, p in ref["per_problem"].items()}
                b = {pid: (float(p[metric]), 1.0) for pid, p in rep["per_problem"].items()}
                d = paired_bootstrap(a, b, metric=metric)
                row["vs_plain"][metric] = {"diff": d.diff, "low": d.low, "high": d.high, "problems": d.problems}
        out[variant] = row
    return out


def render(table: dict) -> str:
    b = table["budget"]
    lines = [f"# critic sampling vs plain sampling, budget {b} programs per problem ({table['label']})", "",
             f"`{table['command']}`", ""]
    for set_name, rows in table["sets"].items():
        lines += [f"## {set_name}", "",
                  f"| variant | 1@{b} | 5@{b} | pass@{b} | hack rate | programs | tokens | 1@{b} - plain [95% CI] | 5@{b} - plain [95% CI] |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v, row in rows.items():
            s = row["summary"]
            diffs = []
            for m in (f"1@{b}", f"5@{b}"):
                d = row.get("vs_plain", {}).get(m)
                diffs.append(f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" if d and d["diff"] is not None else "")
            lines.append(f"| {v} | {s[f'1@{b}']:.1f} | {s[f'5@{b}']:.1f} | {s[f'pass@{b}']:.1f} | {s['hack_rate']} | "
                         f"{s['programs']} | {s['tokens']} | {diffs[0]} | {diffs[1]} |")
        lines += ["", "Where the budget went (programs / pass example tests / of those pass hidden):", ""]
        for v, row in rows.items():
            parts = [f"{k}: {c.get('programs', 0)} / {c.get('example_passed', 0)} / {c.get('example_and_hidden_passed', 0)}"
                     for k, c in row["budget_use"].items()]
            lines.append(f"- {v}: " + "; ".join(parts))
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--out", default=str(ROOT / "runs" / "cs_bench"))
        p.add_argument("--model", default="default")
        p.add_argument("--device", default="cpu")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p = sub.choices["prepare"]
    p.add_argument("--train-run", required=True)
    p.add_argument("--critic-mode", default="head", choices=("head", "top", "lora"))
    p.add_argument("--parts", default="critic,repair", help="what to prepare (two processes can share "
                   "the work: --parts critic and --parts repair)")
    p.add_argument("--critic-epochs", type=int, default=10)
    p.add_argument("--include-gold", action="store_true", help="train the critic on gold programs too "
                   "(off: only the actor's own programs, the better ranking critic, RESULTS.md)")
    p.add_argument("--repair-epochs", type=int, default=2)
    p.add_argument("--repair-batch", type=int, default=8)
    p.add_argument("--repair-grad-accum", type=int, default=1, help="batches per optimizer step (CPU: "
                   "--repair-batch 1 --repair-grad-accum 8 is the same step as a batch of 8 in far less memory)")
    p.add_argument("--repair-max-pairs", type=int, default=4, help="failed programs per problem made into "
                   "repair pairs (fewer: a shorter training, for CPU)")
    p.add_argument("--repair-save-every", type=int, default=0, help="checkpoint every N steps (resumable)")
    p.add_argument("--mixed-precision", default="no")
    for name in ("run", "report"):
        p = sub.choices[name]
        p.add_argument("--label", required=True)
        p.add_argument("--budget", type=int, default=10)
        p.add_argument("--sets", default="mbpp-heldout,humaneval")
        p.add_argument("--store", default=str(ROOT / "benchmarks"))
    p = sub.choices["run"]
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--first-from", help="the variant whose first round the others share (default: "
                   "the first round-based one given; another process may be running it)")
    p.add_argument("--no-report", action="store_true", help="run only (a later `report` builds the table)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--timeout", type=float, default=4.0)
    p.add_argument("--limit", type=int, default=None, help="only the first N problems of each set (smoke tests)")
    args = ap.parse_args(argv)
    {"prepare": prepare, "run": run, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
