"""How far a fine-tuned actor drifted from its base model (issue 19's SFT diagnosis).

    python benchmarks/sft_drift.py layout runs/learning/sftn-cpu/humaneval/samples.jsonl ...
        Per samples file: how many programs carry MBPP's gold layout (`) :`, `if (`/`while (`), a
        return annotation (`) ->`), the `range(len(` idiom, tabs.
    python benchmarks/sft_drift.py kl --style normalized runs/sftn/sft runs/sftnk/sft
        Per LoRA adapter: KL(adapter || its base, adapters off) per target token, exact over the
        vocabulary (``losses.vocab_kl``), on 48 MBPP train gold examples drawn with seed 0, both
        prompt shapes, in the given gold layout.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys

PATTERNS = {"space_colon": r"\) :", "if_paren": r"\b(if|while) \(", "return_annotation": r"\)\s*->",
            "range_len": r"range\(len\(", "tabs": "\t"}


def layout(args) -> None:
    for path in args.samples:
        with open(path) as f:
            progs = [json.loads(line)["program"] for line in f if line.strip()]
        counts = {k: sum(bool(re.search(p, prog)) for prog in progs) for k, p in PATTERNS.items()}
        print(json.dumps({"samples": path, "programs": len(progs), **counts}))


def kl(args) -> None:
    import torch
    from peft import PeftModel

    from coderl.models import load_model
    from coderl.problems import load_problems
    from coderl.training import losses
    from coderl.training.data import build_gold_examples

    torch.set_num_threads(args.threads)
    problems = load_problems("mbpp", split="train")
    for path in args.adapters:
        lm = load_model("default")
        examples, _ = build_gold_examples(problems, lm.tokenizer, False, shapes=("native", "humaneval"),
                                          style=args.style)
        examples = random.Random(args.seed).sample(examples, args.examples)
        model = PeftModel.from_pretrained(lm.model, path).eval()
        values = []
        for e in examples:
            batch = losses.collate([e], pad_id=0, is_encoder_decoder=False)
            with torch.no_grad():
                logits = losses.target_logits(model, batch)
                with model.disable_adapter():
                    ref = losses.target_logits(model, batch)
            values.append(float(losses.vocab_kl(logits, ref, batch["target_mask"])))
        print(json.dumps({"adapter": path, "style": args.style, "examples": len(values),
                          "kl_per_token": round(statistics.mean(values), 4)}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lay = sub.add_parser("layout")
    lay.add_argument("samples", nargs="+")
    k = sub.add_parser("kl")
    k.add_argument("adapters", nargs="+")
    k.add_argument("--style", default="raw", choices=("raw", "normalized"))
    k.add_argument("--examples", type=int, default=48)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    layout(args) if args.cmd == "layout" else kl(args)


if __name__ == "__main__":
    sys.exit(main())
