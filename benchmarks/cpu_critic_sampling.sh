#!/usr/bin/env bash
# The critic-sampling measurement on 2 CPU cores (benchmarks/RESULTS.md, "Critic sampling (issue 18),
# fourth session"): two 1-thread lanes, each variant started as soon as what it needs exists.
#   lane A: the binary critic (head mode: one backbone pass over the train programs, then the head),
#           then plain, refine + repair-self on mbpp-heldout, refine + repair-self on HumanEval
#   lane B: the repair model (1 failed program per problem, 1 epoch: a CPU-sized training), then
#           repair + both on mbpp-heldout, plain on HumanEval, repair + both on HumanEval
# The round-based variants share the first round of `refine` (drawn once, by lane A).
# Settings from the environment:
#   MODEL  the actor (a model spec; the critic and the repair model are built on it)
#   TRAIN  an executed train run of that actor (samples.jsonl + results.jsonl on MBPP train)
#   OUTDIR (runs/cs)  LABEL (cpu)  BUDGET (10)  LOGS (runs/cs/logs)
#   REPAIR_BATCH (8)  REPAIR_ACCUM (1): the measured run used a batch of 8, peak RSS 14.6 GB; with
#   less memory set REPAIR_BATCH=1 REPAIR_ACCUM=8 (the same examples per optimizer step)
# Wall time on 2 cores with the SFT actor of the fourth session: ~2 h 30 min (HumanEval runs are the long part).
set -u
MODEL=${MODEL:?the actor}; TRAIN=${TRAIN:?an executed train run}; OUTDIR=${OUTDIR:-runs/cs}
LABEL=${LABEL:-cpu}; BUDGET=${BUDGET:-10}; LOGS=${LOGS:-$OUTDIR/logs}
PY=${PY:-python3}; B=benchmarks/critic_sampling.py
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$LOGS"; rm -f "$LOGS/critic_failed"
common="--out $OUTDIR --model $MODEL --threads 1"
run() {  # run <set> <variants> [first-from]
  $PY $B run $common --sets "$1" --variants "$2" ${3:+--first-from $3} --label "$LABEL" --budget "$BUDGET" \
    --no-report >> "$LOGS/run_$1_${2//,/_}.log" 2>&1 || echo "$1 $2 failed: $LOGS/run_$1_${2//,/_}.log"
}
(
  $PY $B prepare $common --train-run "$TRAIN" --parts critic > "$LOGS/prepare_critic.log" 2>&1 \
    || { echo "critic preparation failed: $LOGS/prepare_critic.log"; touch "$LOGS/critic_failed"; exit 2; }
  run mbpp-heldout plain
  run mbpp-heldout refine,repair-self
  run humaneval refine,repair-self
) &
(
  $PY $B prepare $common --train-run "$TRAIN" --parts repair --repair-max-pairs 1 --repair-epochs 1 \
    --repair-batch "${REPAIR_BATCH:-8}" --repair-grad-accum "${REPAIR_ACCUM:-1}" \
    --repair-save-every 20 > "$LOGS/prepare_repair.log" 2>&1 \
    || { echo "repair preparation failed: $LOGS/prepare_repair.log"; exit 2; }
  until grep -qs '"complete": true' "$OUTDIR/critic_run/critic/metrics.json"; do  # lane A's critic
    [ -f "$LOGS/critic_failed" ] && exit 2; sleep 20; done
  run mbpp-heldout repair,both refine
  run humaneval plain
  run humaneval repair,both refine
) &
wait
$PY $B report --out "$OUTDIR" --label "$LABEL" --budget "$BUDGET"
