#!/usr/bin/env bash
# The critic-sampling measurement on a GPU machine (benchmarks/RESULTS.md, "Critic sampling"):
# prepare the binary critic and the repair model from an executed train run (two processes), then
# plain and the round-based variants per set in parallel processes as soon as what each needs is
# ready (a decode step is host-bound: one GPU serves several at once), then the table. Settings from the environment:
#   MODEL (a model spec; default: default)  TRAIN (executed train run dir)  DEV (cuda)  LIMIT (problems
#   per set; empty: all)  BUDGET (10)  BATCH (256)  OUTDIR (runs/cs)  STORE (where the table goes)
set -u
MODEL=${MODEL:-default}; TRAIN=${TRAIN:?an executed train run}; DEV=${DEV:-cuda}; BUDGET=${BUDGET:-10}
BATCH=${BATCH:-256}; OUTDIR=${OUTDIR:-runs/cs}; STORE=${STORE:-benchmarks}; LABEL=${LABEL:-gpu}
LIM=${LIMIT:+--limit $LIMIT}
PY=${PY:-python3}; B=benchmarks/critic_sampling.py
common="--out $OUTDIR --model $MODEL --device $DEV"
t0=$(date +%s)
# the critic and the repair model train at once; each variant starts as soon as what it needs exists
$PY $B prepare $common --train-run "$TRAIN" --parts critic ${PREPARE_ARGS:-} > "$STORE/cs_prepare_critic.log" 2>&1 &
PC=$!
$PY $B prepare $common --train-run "$TRAIN" --parts repair ${PREPARE_ARGS:-} > "$STORE/cs_prepare_repair.log" 2>&1 &
PR=$!
wait $PC || { echo "critic preparation failed"; cat "$STORE/cs_prepare_critic.log"; exit 2; }
echo "critic ready: $(( $(date +%s) - t0 ))s"
for set in mbpp-heldout humaneval; do
  $PY $B run $common --sets $set --variants plain --label x --budget $BUDGET --batch-size $BATCH $LIM --no-report \
    > "$STORE/cs_$set-plain.log" 2>&1 &
  $PY $B run $common --sets $set --variants refine,repair-self --label x --budget $BUDGET \
    --batch-size $BATCH $LIM --no-report > "$STORE/cs_$set-refine.log" 2>&1 &
  $PY $B run $common --sets $set --variants refine-failed --first-from refine --label x --budget $BUDGET \
    --batch-size $BATCH $LIM --no-report > "$STORE/cs_$set-refine-failed.log" 2>&1 &
done
wait $PR || { echo "repair preparation failed"; cat "$STORE/cs_prepare_repair.log"; }
echo "repair model ready: $(( $(date +%s) - t0 ))s"
for set in mbpp-heldout humaneval; do
  $PY $B run $common --sets $set --variants repair,both --first-from refine --label x --budget $BUDGET \
    --batch-size $BATCH $LIM --no-report > "$STORE/cs_$set-repair.log" 2>&1 &
done
wait
echo "runs: $(( $(date +%s) - t0 ))s"
$PY $B report --out $OUTDIR --label $LABEL --budget $BUDGET --device $DEV --store "$STORE"
