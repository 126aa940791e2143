"""Does the critic rank a problem's samples usefully? (issue 10, "the critic's ranking")

On a learning-scoreboard set with several samples per problem (``heldout-n10``: the first 100
problems of mbpp-heldout, 10 samples each), score every sample with one or more head-mode critics
(one backbone pass shared by all: the hidden states, then each critic's head) and pick, per
problem, the sample with the highest sequence P(passed). Reported beside a random pick (pass@1) and the oracle (pass@10), with the critic's
passed-vs-not AUROC on these programs, into ``benchmarks/critic_ranking_<label>.json``.

    python benchmarks/critic_ranking.py --critic runs/critic_sft2/critic/best \
        --critic runs/critic_sft2_nogold/critic/best --samples-of sft --label sft --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.critic.critic_trainer import DATA_FILE  # noqa: E402
from coderl.critic.data import join_samples_results  # noqa: E402
from coderl.critic.features import FeatureBaseline, feature_matrix  # noqa: E402
from coderl.critic.metrics import bootstrap_auroc_diff, classification_metrics, ranking  # noqa: E402
from coderl.critic.model import CriticModel  # noqa: E402
from coderl.problems.problems_config import ProblemsConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critic", required=True, action="append",
                    help="a critic directory (<run>/critic/best); repeatable: head-mode critics on "
                         "the same backbone share one backbone pass")
    ap.add_argument("--samples-of", required=True, help="the scoreboard label whose samples are ranked "
                    "(runs/learning/<label>/<set>/)")
    ap.add_argument("--label", required=True, help="name of the stored result")
    ap.add_argument("--set", default="heldout-n10")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "learning"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    if args.set != "heldout-n10":
        raise SystemExit(f"--set {args.set!r}: only heldout-n10 has several samples per problem")
    run = Path(args.runs_dir) / args.samples_of / args.set
    samples, results = run / "samples.jsonl", run / "results.jsonl"
    for p in (samples, results):
        if not p.is_file():
            raise SystemExit(f"{p}: missing; run benchmarks/learning.py run --label {args.samples_of} "
                             f"--sets {args.set} first")
    if args.threads:
        torch.set_num_threads(args.threads)
    problems = list(ProblemsConfig(source="mbpp-heldout", split="test", end=100).load())
    by_id = {p.id: p for p in problems}
    pairs = [(s, r) for s, r in join_samples_results(samples, results, by_id) if s.origin == "sampled"]
    settings = [CriticModel.read_settings(Path(c)) for c in args.critic]
    shared = all(st.mode == "head" for st in settings) and len(
        {(st.backbone_path or st.backbone_spec, st.prompt_style, st.max_context_tokens,
          st.max_program_tokens, st.num_classes) for st in settings}) == 1
    if not shared:
        raise SystemExit("--critic: several critics must be head-mode critics of one backbone, context "
                         "settings and number of classes (score others one at a time)")
    t0 = time.time()
    critic = CriticModel.from_pretrained(Path(args.critic[0]))
    encs = [critic.encode(critic.context(by_id[s.problem_id]), s.program) for s, _ in pairs]
    hs = critic.program_hidden(encs, batch_size=32, share_prompt=True)
    backbone_s = round(time.time() - t0, 1)
    y = [int(r["outcome"] == "passed") for _, r in pairs]
    rec = {"samples": str(samples), "programs": len(pairs), "passed": sum(y), "backbone_seconds": backbone_s,
           "critics": {},
           "command": "python benchmarks/critic_ranking.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    train_problems = {p.id: p for p in ProblemsConfig(source="mbpp", split="train").load()}
    X_eval = feature_matrix([s.program for s, _ in pairs], [critic.context(by_id[s.problem_id]) for s, _ in pairs])
    pids = [s.problem_id for s, _ in pairs]

    def measured(scores: list[float]) -> dict:
        cand: dict[str, list[tuple[float, bool]]] = {}
        for pid, sc, ok in zip(pids, scores, y):
            cand.setdefault(pid, []).append((sc, bool(ok)))
        m = classification_metrics(y, np.array([[1 - v, v] for v in scores]), 2, 1)
        return {"ranking": ranking(cand), "auroc": m.get("auroc"), "average_precision": m.get("average_precision")}

    per_program = {}
    for c in args.critic:
        critic.load_weights(Path(c))
        pc = critic.pass_class
        p_pass = [float(critic.score_hidden(h)[0][pc]) for h in hs]
        # the feature baseline fit on this critic's own training programs (its data.jsonl)
        train = [json.loads(x) for x in (Path(c).parent / DATA_FILE).read_text().splitlines()]
        train = [e for e in train if e["split"] == "train"]
        X = feature_matrix([e["program"] for e in train],
                           [critic.context(train_problems[e["problem_id"]]) for e in train])
        fb = FeatureBaseline(2, seed=0).fit(X, [int(e["outcome"] == "passed") for e in train])
        f_pass = [float(v) for v in fb.predict_proba(X_eval)[:, 1]]
        rec["critics"][c] = {**measured(p_pass), "feature_baseline": measured(f_pass),
                             "auroc_diff_vs_features": bootstrap_auroc_diff(pids, y, np.array(p_pass),
                                                                            np.array(f_pass),
                                                                            resamples=1000, seed=0),
                             "trained_on": len(train)}
        per_program[c] = p_pass
    lines = [json.dumps({"problem_id": s.problem_id, "index": s.index, "outcome": r["outcome"],
                         "p_pass": {c: round(per_program[c][i], 6) for c in per_program}})
             for i, (s, r) in enumerate(pairs)]
    (run / f"critic_ranking_{args.label}.jsonl").write_text("".join(x + "\n" for x in lines))
    dest = ROOT / "benchmarks" / f"critic_ranking_{args.label}.json"
    dest.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec, indent=1))
    print(f"stored {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
