"""Does the critic rank a problem's samples usefully? (issue 10, "the critic's ranking")

On a learning-scoreboard set with several samples per problem (``heldout-n10``: the first 100
problems of mbpp-heldout, 10 samples each), score every sample with a critic (``coderl
critic-score``, resumable) and pick, per problem, the sample with the highest sequence
P(passed). Reported beside a random pick (pass@1) and the oracle (pass@10), with the critic's
passed-vs-not AUROC on these programs, into ``benchmarks/critic_ranking_<label>.json``.

    python benchmarks/critic_ranking.py --critic runs/mbpp_smollm2_coderl_cpu/critic/best \
        --samples-of sft --label sft --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.critic import ScoreConfig  # noqa: E402
from coderl.critic.metrics import classification_metrics  # noqa: E402
from coderl.critic.scores import read_scores  # noqa: E402
from coderl.critic.scoring import rank_by_critic, score  # noqa: E402
from coderl.critic.data import join_samples_results  # noqa: E402
from coderl.problems.problems_config import ProblemsConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critic", required=True, help="a critic directory (<run>/critic/best)")
    ap.add_argument("--samples-of", required=True, help="the scoreboard label whose samples are ranked "
                    "(runs/learning/<label>/<set>/)")
    ap.add_argument("--label", required=True, help="name of the stored result")
    ap.add_argument("--set", default="heldout-n10")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "learning"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    if args.set != "heldout-n10":
        raise SystemExit(f"--set {args.set!r}: only heldout-n10 has several samples per problem")
    run = Path(args.runs_dir) / args.samples_of / args.set
    samples, results = run / "samples.jsonl", run / "results.jsonl"
    for p in (samples, results):
        if not p.is_file():
            raise SystemExit(f"{p}: missing; run benchmarks/learning.py run --label {args.samples_of} "
                             f"--sets {args.set} first")
    out = run / f"critic_scores.{args.label}.npz"
    problems = list(ProblemsConfig(source="mbpp-heldout", split="test", end=100).load())
    t0 = time.time()
    summary = score(problems, run, ScoreConfig(checkpoint=args.critic, threads=args.threads),
                    samples_path=samples, results_path=results, out_path=out)
    seconds = round(time.time() - t0, 1)
    rank = rank_by_critic(samples, results, out, [p.id for p in problems])
    scores = read_scores(out)
    pairs = [(scores[s.key].p_pass, r["outcome"] == "passed")
             for s, r in join_samples_results(samples, results, {p.id: p for p in problems})
             if s.origin == "sampled"]
    import numpy as np

    y = [int(ok) for _, ok in pairs]
    p = np.array([[1 - s, s] for s, _ in pairs])
    m = classification_metrics(y, p, 2, 1)
    rec = {"critic": args.critic, "samples": str(samples), "ranking": rank,
           "auroc": m.get("auroc"), "average_precision": m.get("average_precision"),
           "programs": len(pairs), "passed": sum(y), "scoring_seconds": seconds,
           "scored": summary.get("scored"),
           "command": "python benchmarks/critic_ranking.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    dest = ROOT / "benchmarks" / f"critic_ranking_{args.label}.json"
    dest.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec, indent=1))
    print(f"stored {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
