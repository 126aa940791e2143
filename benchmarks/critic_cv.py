"""Cross-validated critic metrics (issue 10): every problem held out once, no epoch selection.

A single held-out split of MBPP train has few passed programs (14-20 of 280), too few to pin an
AUROC down, and picking the best epoch on it biases it upwards. Here the problems are split into
K disjoint folds (``critic.val_fold``); for each, a critic trains on the other folds for a fixed
number of epochs and is read at its last epoch (``best_metric: last``); the held-out predictions of
all folds are pooled into one AUROC / average precision (passed vs not), beside the feature
baseline's (a logistic regression per fold on the same split) and the majority class, with a
bootstrap over problems of the AUROC difference. With a head-mode critic the folds share one
feature cache (``--features``: a trained critic's ``critic/features``), so each fold costs
seconds.

    python benchmarks/critic_cv.py --samples runs/mbpp_smollm2_coderl_cpu/samples.jsonl \
        --results runs/mbpp_smollm2_coderl_cpu/results.jsonl \
        --features runs/mbpp_smollm2_coderl_cpu/critic/features --num-classes 2 --label sft2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coderl.critic import CriticConfig  # noqa: E402
from coderl.critic.critic_trainer import CRITIC_DIR, FEATURES_DIR, PREDICTIONS_FILE, train_critic  # noqa: E402
from coderl.critic.data import label, pass_class  # noqa: E402
from coderl.critic.metrics import bootstrap_auroc_diff, classification_metrics  # noqa: E402
from coderl.problems.problems_config import ProblemsConfig  # noqa: E402



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--features", help="a head-mode critic's feature cache to share (critic/features)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--num-classes", type=int, default=2, choices=(2, 4))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--class-weights", default="none", choices=("none", "balanced"))
    ap.add_argument("--no-gold", action="store_true", help="train without the gold programs (only "
                    "the model's own executed programs)")
    ap.add_argument("--label", required=True, help="name of the stored result")
    ap.add_argument("--out-dir", default=str(ROOT / "runs" / "critic_cv"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mode", default="head", choices=("head", "top", "lora", "full"),
                    help="what trains (head: frozen backbone; top: its top layers; lora)")
    ap.add_argument("--model", default="default", help="the backbone (the actor)")
    ap.add_argument("--lr", type=float, default=None, help="default: the mode's")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--store", default=str(ROOT / "benchmarks"), help="where critic_cv_<label>.json goes")
    args = ap.parse_args(argv)

    problems = list(ProblemsConfig(source="mbpp", split="train").load())
    out = Path(args.out_dir) / args.label
    t0 = time.time()
    preds, folds = [], []
    for k in range(args.folds):
        run = out / f"fold{k}"
        if args.features:
            link = run / CRITIC_DIR / FEATURES_DIR
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(Path(args.features).resolve(), target_is_directory=True)
        cfg = CriticConfig(model=args.model, num_classes=args.num_classes, mode=args.mode, epochs=args.epochs,
                           lr=args.lr, device=args.device, batch_size=args.batch_size,
                           val_fraction=1 / args.folds, val_fold=k, best_metric="last",
                           class_weights=args.class_weights, include_gold=not args.no_gold,
                           bootstrap=10, threads=args.threads,
                           progress=False)
        s = train_critic(problems, run, cfg, samples_path=args.samples, results_path=args.results,
                         echo=lambda m: None)
        fold_preds = [json.loads(x) for x in (run / CRITIC_DIR / PREDICTIONS_FILE).read_text().splitlines()]
        preds += fold_preds
        v = s["validation"]
        folds.append({"fold": k, "problems": s["data"]["validation"]["problems"], "programs": v["n"],
                      "passed": sum(p["outcome"] == "passed" for p in fold_preds),
                      "auroc": v["auroc"], "features_auroc": s["baselines"]["features"]["auroc"]})
        print(f"fold {k}: {v['n']} programs, AUROC {v['auroc']:.3f} (features "
              f"{s['baselines']['features']['auroc']:.3f})", flush=True)
    C = args.num_classes
    y = [label(p["outcome"], C) for p in preds]
    probs = np.array([p["probs"] for p in preds])
    pc = pass_class(C)
    critic = classification_metrics(y, probs, C, pc)
    fb = np.array([p["feature_baseline_p_pass"] for p in preds])
    y_pass = [int(p["outcome"] == "passed") for p in preds]
    feat = classification_metrics(y_pass, np.stack([1 - fb, fb], 1), 2, 1)
    diff = bootstrap_auroc_diff([p["problem_id"] for p in preds], y_pass, probs[:, pc], fb,
                                resamples=1000, seed=0)
    rec = {"label": args.label, "num_classes": C, "folds": args.folds, "epochs": args.epochs, "mode": args.mode,
           "class_weights": args.class_weights, "gold": not args.no_gold, "samples": args.samples,
           "programs": len(preds), "passed": sum(y_pass), "problems": len({p["problem_id"] for p in preds}),
           "critic": {k: critic.get(k) for k in ("accuracy", "macro_f1", "auroc", "average_precision",
                                                 "confusion")},
           "features": {k: feat.get(k) for k in ("auroc", "average_precision")},
           "majority_average_precision": round(sum(y_pass) / max(1, len(y_pass)), 4),
           "auroc_diff_vs_features": diff, "per_fold": folds, "seconds": round(time.time() - t0, 1),
           "command": "python benchmarks/critic_cv.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    dest = Path(args.store) / f"critic_cv_{args.label}.json"
    dest.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "per_fold"}, indent=1))
    print(f"stored {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
