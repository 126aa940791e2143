"""Training speed and memory: seconds per optimizer step, tokens/s and peak RSS of the actor's
SFT and RL steps, full fine-tuning and LoRA, on the default model (SmolLM2-135M-Instruct).

Each variant runs in its own process (so its peak RSS is its own) through the real stage
functions (``train_sft`` / ``train_rl``: accelerate loop, AdamW, gradient accumulation), with the
settings of the CPU recipes: micro-batches of 1, gradient accumulation 8 (8 programs per step),
LoRA r=16 on all linear layers.

* SFT steps read the MBPP train gold programs with their chat prompts (prompt ~185 tokens,
  program ~60 tokens on average).
* RL steps read synthetic samples of the same problems whose generated text is padded with code
  lines to ``--target-tokens`` (default 256, generation's max_new_tokens: the worst case a
  sampled program reaches), returns +-1.3, q̂ = 1, no CE steps: the cost of the RL loss itself.

Figures per variant: the first step's seconds (start-up: allocator, thread pools) and the median
of the other steps, tokens/s (prompt + program tokens of every sequence, over the steps after the
first), peak RSS of the process (``ru_maxrss``) and, on a GPU, peak allocated GPU memory.

    .venv/bin/python benchmarks/training.py --steps 3 --threads 2      # a short run (3 steps each)
    .venv/bin/python benchmarks/training.py --steps 8 --device cuda    # the same steps on a GPU

Writes ``benchmarks/training_<device>_<date>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = ("sft-full", "sft-lora", "rl-full", "rl-lora")
EXTRA_VARIANTS = ("rl-lora-gc", "rl-lora-kl")  # gradient checkpointing; KL with adapters disabled
FILLER = ["    result = []\n", "    for i in range(len(arr)):\n", "        if arr[i] % 2 == 0:\n",
          "            result.append(arr[i] * 2)\n", "    total = sum(result)\n"]


def _samples(problems, tok, target_tokens: int, tmp: Path) -> tuple[Path, Path]:
    """One sampled program per problem (raw text padded to ``target_tokens``) and a greedy one
    with another outcome (non-zero returns)."""
    from coderl.models import build_prompt, extract_program
    from coderl.training.data import gold_continuation

    samples, results = [], []
    for n, p in enumerate(problems):
        prompt = build_prompt(p, tok, "auto", False)
        body = gold_continuation(p, prompt, p.solutions[0]) or "x):\n    return x\n"
        i = 0
        while len(tok(body, add_special_tokens=False).input_ids) < target_tokens - 2:
            body += FILLER[i % len(FILLER)]
            i += 1
        ids = tok(body, add_special_tokens=False).input_ids[:target_tokens - 2]
        raw = tok.decode(ids) + "\n```"
        ok = n % 2 == 0
        for idx, origin, outcome in ((0, "sampled", "passed" if ok else "failed"),
                                     (1, "greedy", "failed" if ok else "passed")):
            samples.append({"problem_id": p.id, "index": idx, "origin": origin, "prompt": prompt.text,
                            "raw": raw, "finish": "length", "program": extract_program(raw, prompt, p)})
            results.append({"problem_id": p.id, "index": idx, "outcome": outcome, "tests_passed": 0,
                            "tests_total": 3})
    s, r = tmp / "samples.jsonl", tmp / "results.jsonl"
    s.write_text("".join(json.dumps(x) + "\n" for x in samples))
    r.write_text("".join(json.dumps(x) + "\n" for x in results))
    return s, r


def run_one(variant: str, args) -> dict:
    import torch

    from coderl.models import load_model
    from coderl.problems import load_problems
    from coderl.training import RLConfig, SFTConfig, train_rl, train_sft

    if args.threads:
        torch.set_num_threads(args.threads)
    stage, mode = variant.split("-")[:2]
    extra = variant.split("-")[2:]
    per_step = args.batch_size * args.grad_accum
    problems = list(load_problems("mbpp", split="train", end=per_step * args.steps))
    common = dict(mode=mode, epochs=1, batch_size=args.batch_size, grad_accum=args.grad_accum,
                  val_source=None, save_every=0, max_steps=args.steps, progress=False,
                  device="cuda" if args.device == "cuda" else "cpu", threads=args.threads,
                  gradient_checkpointing="gc" in extra, mixed_precision=args.mixed_precision,
                  release_memory=not args.no_release_memory)
    if args.lora_dropout is not None:
        common["lora_dropout"] = args.lora_dropout
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="coderl-bench-train-") as tmp:
        tmp = Path(tmp)
        quiet = lambda *_: None  # noqa: E731
        if stage == "sft":
            summary = train_sft(problems, tmp / "run", SFTConfig(model=args.model, **common), echo=quiet)
            log = tmp / "run" / "sft" / "log.jsonl"
        else:
            tok = load_model(args.model).tokenizer
            s, r = _samples(problems, tok, args.target_tokens, tmp)
            cfg = RLConfig(init=args.model, ce_every=0, kl_coef=0.05 if "kl" in extra else 0.0, **common)
            summary = train_rl(problems, tmp / "run", cfg, samples_path=s, results_path=r, echo=quiet)
            log = tmp / "run" / "rl" / "log.jsonl"
        steps = [json.loads(l) for l in log.read_text().splitlines() if '"event": "step"' in l]
    secs = [e["seconds"] for e in steps]
    toks = [e["tokens"] for e in steps]
    rest = slice(1, None) if len(steps) > 1 else slice(None)
    out = {"variant": variant, "stage": stage, "mode": mode, "steps": len(steps),
           "sequences_per_step": per_step, "first_step_s": round(secs[0], 2) if secs else None,
           "s_per_step": round(statistics.median(secs[rest]), 2) if secs else None,
           "tokens_per_step": round(statistics.mean(toks), 1) if toks else None,
           "tokens_per_s": round(sum(toks[rest]) / max(sum(secs[rest]), 1e-9), 1) if secs else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "trainable_parameters": summary["trainable_parameters"], "wall_s": round(time.time() - t0, 1)}
    if args.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list of {VARIANTS + EXTRA_VARIANTS}")
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--lora-dropout", type=float, default=None, help="default: the config's")
    ap.add_argument("--no-release-memory", action="store_true", help="keep glibc's default allocator settings")
    ap.add_argument("--target-tokens", type=int, default=256, help="RL: generated tokens per sample")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        Path(args.json_out).write_text(json.dumps(run_one(args.one, args)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS + EXTRA_VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}")
    rows = []
    load_start = os.getloadavg()[0]
    for v in variants:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            res = Path(f.name)
        cmd = [sys.executable, __file__, "--one", v, "--json-out", str(res)] + [
            x for k in ("steps", "model", "batch_size", "grad_accum", "target_tokens", "threads",
                        "device", "mixed_precision") if getattr(args, k) is not None
            for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
        print(f"-- {v}", flush=True)
        subprocess.run(cmd, check=True)
        row = json.loads(res.read_text())
        res.unlink()
        print(json.dumps(row), flush=True)
        rows.append(row)
    load = os.getloadavg()[0]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device, "model": args.model,
              "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
              "target_tokens": args.target_tokens, "threads": args.threads,
              "mixed_precision": args.mixed_precision, "lora_dropout": args.lora_dropout,
              "release_memory": not args.no_release_memory, "load_average_at_start": round(load_start, 2),
              "load_average_at_end": round(load, 2),
              "cpus": os.cpu_count(), "results": rows}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / f"training_{args.device}_{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
