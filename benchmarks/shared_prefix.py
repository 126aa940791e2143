"""What the shared-prefix update saves (issue 19): the forward + backward of a group of G programs
of one MBPP problem with the default model (LoRA r=16), the prompt run once
(``training.shared_prefix.group_token_logprobs``) vs every sequence whole in one padded batch
(what ``training.losses.token_logprobs`` does). Same loss (tests pin it); the time and the tokens
the model runs differ.

    python benchmarks/shared_prefix.py --group 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    import torch
    from peft import LoraConfig, get_peft_model

    from coderl.models import build_prompt, load_model
    from coderl.problems import load_problems
    from coderl.training.data import encode_prompt
    from coderl.training.shared_prefix import group_token_logprobs

    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    model = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    tok = lm.tokenizer
    rows = []
    for p in load_problems("mbpp", split="train", end=args.problems):
        prompt = encode_prompt(tok, build_prompt(p, tok).text, False, 1024)
        body = tok(p.solutions[0], add_special_tokens=False).input_ids
        conts = [body[: max(8, len(body) - 7 * i)] for i in range(args.group)]  # programs of varied length
        times = {}
        for how in ("unshared", "shared", "unshared", "shared"):  # second pass of each is timed
            model.zero_grad()
            t = time.perf_counter()
            if how == "shared":
                lp, mask = group_token_logprobs(model, prompt, conts, tok.pad_token_id or 0)
            else:
                T = max(map(len, conts))
                ids = torch.full((len(conts), len(prompt) + T), tok.pad_token_id or 0)
                att = torch.zeros_like(ids)
                for i, c in enumerate(conts):
                    ids[i, :len(prompt) + len(c)] = torch.tensor(prompt + c)
                    att[i, :len(prompt) + len(c)] = 1
                logits = model(input_ids=ids, attention_mask=att).logits[:, len(prompt) - 1:-1].float()
                tgt = ids[:, len(prompt):]
                lp = logits.gather(-1, tgt[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)
                mask = att[:, len(prompt):].bool()
            loss = -(lp * mask).sum() / mask.sum()
            loss.backward()
            times[how] = time.perf_counter() - t
        n_prog = sum(map(len, conts))
        rows.append({"problem": p.id, "prompt_tokens": len(prompt), "program_tokens": n_prog, "group": args.group,
                     "tokens_run_unshared": args.group * (len(prompt) + max(map(len, conts))),
                     "tokens_run_shared": len(prompt) + args.group * max(map(len, conts)),
                     "seconds_unshared": round(times["unshared"], 3), "seconds_shared": round(times["shared"], 3),
                     "speedup": round(times["unshared"] / times["shared"], 2)})
        print(json.dumps(rows[-1]), flush=True)
    rec = {"machine": platform.platform(), "threads": args.threads, "rows": rows,
           "mean_speedup": round(sum(r["speedup"] for r in rows) / len(rows), 2)}
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
