"""Generation speed: ``coderl generate`` vs the naive loop, same model, problems and budget.

The naive loop is the shape of CodeRL's generate.py: one problem at a time,
``model.generate(num_return_sequences=n)``, no stop strings (each batch runs until all of its
sequences emit the end token or reach ``max_new_tokens``). Both get the same prompts (the chat
prompt of coderl.models.prompts), sampling settings and token budget, in the same process.

Figures: programs/s (= the wall-time ratio; both produce n programs per problem, the
like-for-like number); program tokens/s (tokens up to the end of the program, i.e. up to the
closing fence: what both sides must generate); generated tokens/s (everything each side
computed: the naive loop also generates the prose after the program, up to its end token).

    .venv/bin/python benchmarks/generation.py --problems 16 --num-seqs 8 --threads 2 --batch-size 32,64

Several ``--batch-size`` values are measured against the same naive run. On a machine without
the bundled weights (the GPU box, where the 98 MB GGUF cannot be copied), ``--random-init DIR``
builds the model from DIR's config and tokenizer with random weights: then no sequence stops
early (random tokens hit no stop string or end token), so the ratio measures batching alone. Enough sequences
(problems x num_seqs) to keep coderl's batch full most of the time are what it is built for
(sampling for RL and pass@k); with few, the tail of the last sequences dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from coderl.generation import GenerationConfig, generate, read_samples  # noqa: E402
from coderl.models import build_prompt, extract_program, load_model  # noqa: E402
from coderl.problems import load_problems  # noqa: E402


@torch.inference_mode()
def naive(lm, problems, n, temperature, top_p, max_new_tokens, seed):
    tok, model = lm.tokenizer, lm.model
    eos = tok.eos_token_id
    tokens, program_tokens, programs = 0, 0, []
    torch.manual_seed(seed)
    for p in problems:
        prompt = build_prompt(p, tok, "auto")
        enc = tok([prompt.text], return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                             top_k=0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             pad_token_id=tok.pad_token_id)
        for row in out[:, enc.input_ids.shape[1]:].tolist():
            length = row.index(eos) + 1 if eos in row else len(row)
            tokens += length
            program_tokens += _until_stop(tok, row[:length], prompt.stop)
            programs.append(extract_program(tok.decode(row[:length], skip_special_tokens=True),
                                            prompt, p))
    return tokens, program_tokens, programs


def _until_stop(tok, ids, stop):
    """Tokens up to and including the one that completes the first stop string (all if none):
    the part of a naive sequence that coderl would have generated too."""
    text = tok.decode(ids, skip_special_tokens=True)
    if not any(s in text for s in stop):
        return len(ids)
    lo, hi = 1, len(ids)
    while lo < hi:  # smallest prefix whose text contains a stop string
        mid = (lo + hi) // 2
        if any(s in tok.decode(ids[:mid], skip_special_tokens=True) for s in stop):
            hi = mid
        else:
            lo = mid + 1
    return lo


def random_model(path: Path, device: str, dtype: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from coderl.models.resolve import LoadedModel

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model.to(device).eval(), tokenizer=tok, spec="random", path=path,
                       is_encoder_decoder=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=16, help="first N MBPP test problems")
    ap.add_argument("--num-seqs", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--batch-size", default="32", help="coderl generate's batch (comma-separated: several runs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--random-init", type=Path, default=None, metavar="DIR",
                    help="a model directory without weights: its config, tokenizer and random weights")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = random_model(args.random_init, args.device, args.dtype) if args.random_init else \
        load_model("default", device=args.device, dtype=args.dtype)
    problems = load_problems("mbpp", split="test", end=args.problems)
    rows = {}

    for bs in [int(b) for b in str(args.batch_size).split(",")]:
        load0 = os.getloadavg()[0]
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            cfg = GenerationConfig(num_seqs=args.num_seqs, greedy=False, batch_size=bs,
                                   temperature=args.temperature, top_p=args.top_p,
                                   max_new_tokens=args.max_new_tokens, seed=args.seed, progress=False)
            summary = generate(problems, Path(d) / "s.jsonl", cfg, model=lm)
            samples = read_samples(Path(d) / "s.jsonl")
        dt = time.time() - t
        rows[f"coderl (batch {bs})"] = {
            "seconds": round(dt, 1), "tokens": summary["tokens"], "program_tokens": summary["tokens"],
            "programs": len(samples), "tokens_per_s": round(summary["tokens"] / dt, 2),
            "program_tokens_per_s": round(summary["tokens"] / dt, 2),
            "programs_per_s": round(len(samples) / dt, 3), "loadavg_start": load0}
        print(f"coderl batch {bs}: {rows[f'coderl (batch {bs})']}", flush=True)

    load0 = os.getloadavg()[0]
    t = time.time()
    ntok, nprog_tok, programs = naive(lm, problems, args.num_seqs, args.temperature, args.top_p,
                           args.max_new_tokens, args.seed)
    dt = time.time() - t
    rows["naive"] = {"seconds": round(dt, 1), "tokens": ntok, "program_tokens": nprog_tok,
                     "programs": len(programs), "tokens_per_s": round(ntok / dt, 2),
                     "program_tokens_per_s": round(nprog_tok / dt, 2),
                     "programs_per_s": round(len(programs) / dt, 3), "loadavg_start": load0}

    naive_row = rows["naive"]
    result = {"setup": {**vars(args), "out": str(args.out) if args.out else None,
                        "random_init": str(args.random_init) if args.random_init else None,
                        "torch_threads": torch.get_num_threads(), "model": str(lm.path),
                        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}"
                                   + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")},
              **rows,
              "speedups": {k: {"tokens_per_s": round(r["tokens_per_s"] / naive_row["tokens_per_s"], 2),
                               "program_tokens_per_s": round(r["program_tokens_per_s"]
                                                             / naive_row["program_tokens_per_s"], 2),
                               "wall": round(naive_row["seconds"] / r["seconds"], 2)}
                           for k, r in rows.items() if k != "naive"}}
    print(json.dumps(result, indent=1))
    print("\n| | seconds | generated tokens | tokens/s | program tokens/s | programs/s |\n|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} | "
              f"{r['program_tokens_per_s']} | {r['programs_per_s']} |")
    for k, sp in result["speedups"].items():
        print(f"{k}: {sp['tokens_per_s']}x generated tokens/s, {sp['program_tokens_per_s']}x program "
              f"tokens/s, {sp['wall']}x wall time (programs/s)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
