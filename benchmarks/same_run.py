"""Are two run directories the same run? (a refactor must not change what the main job produces)

    python benchmarks/same_run.py runs_before/mbpp_smollm2_coderl_loop_cpu runs/mbpp_smollm2_coderl_loop_cpu

Compares, box by box, what decides results — samples, results (verdicts, without timings), the
report's metrics, the critic's held-out metrics and weights, the critic scores, the SFT and RL
weights, the comparison table — and ignores what only says how long it took. Exit 0 when every
box present in both is identical; prints one line per box.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

TIMING = {"wall_time", "cached", "seconds", "train_seconds", "wall_seconds", "peak_rss_mb", "tokens_per_s",
          "seconds_per_step", "updated", "program_hash", "meta", "config", "report_path", "plots",
          "programs_per_second", "checkpoint", "model", "path"}


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in TIMING and not k.endswith("_s")}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _jsonl(p: Path):
    recs = [_strip(json.loads(l)) for l in p.read_text().splitlines() if l.strip()]
    return sorted(recs, key=lambda r: (str(r.get("problem_id")), r.get("index", 0)))


def _json(p: Path):
    return _strip(json.loads(p.read_text()))


def _bytes(p: Path):
    return hashlib.sha256(p.read_bytes()).hexdigest()


CHECKS = [("samples.jsonl", _jsonl), ("results.jsonl", _jsonl), ("report.json", _json),
          ("critic/metrics.json", _json), ("critic/best/critic_head.safetensors", _bytes),
          ("critic_scores.npz", _bytes), ("sft/adapter_model.safetensors", _bytes),
          ("rl/adapter_model.safetensors", _bytes), ("compare.json", _json)]


def main(a: str, b: str) -> int:
    bad = 0
    for rel, read in CHECKS:
        pa, pb = Path(a) / rel, Path(b) / rel
        if not (pa.exists() and pb.exists()):
            print(f"{rel:42s} missing in {'both' if not pa.exists() and not pb.exists() else (a if not pa.exists() else b)}")
            continue
        same = read(pa) == read(pb)
        bad += not same
        print(f"{rel:42s} {'identical' if same else 'DIFFERENT'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
