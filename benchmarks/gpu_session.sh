#!/usr/bin/env bash
# One GPU session's measurements (benchmarks/RESULTS.md, "GPU measurements, 2026-12-04"), run on the lent
# H200 in one call. The bundled model's GGUF (98 MB) cannot travel in one call (64 MiB), so it
# arrives in two parts in two calls made back to back (the machine stays warm between them):
#   call 1: carry .whl .gpu/part_a   -> pip install .whl/* into /tmp/site, cp .gpu/part_a /tmp/gpu/
#           (the repository's ignored paths are not kept between calls; /tmp is, while warm)
#   call 2: carry .gpu/part_b .gpu/train.tgz -> this script
# .gpu/train.tgz: samples.jsonl + results.jsonl of an executed MBPP train run of the base model
# (configs/mbpp_smollm2_critic_cpu.yaml up to execute: 8 samples + greedy per problem).
# In parallel: (1) critic sampling vs plain sampling (benchmarks/gpu_critic_sampling.sh); (2) the
# learning table's rows on the GPU: base, SFT on both prompt shapes, expert iteration on the base
# model's passing train samples (benchmarks/learning.py, sets in order of importance).
set -u
test -f /tmp/gpu/part_a -a -f .gpu/part_b -a -d /tmp/site || { echo "parts or /tmp/site missing: the machine was not warm"; exit 3; }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/learning"
cat /tmp/gpu/part_a .gpu/part_b > .gpu/model.gguf
mkdir -p runs/train && tar xzf .gpu/train.tgz -C runs/train
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
M=$PWD/.gpu/model.gguf
LIMIT_S=${LIMIT_S:-480}
SETS=humaneval,mbpp-heldout,heldout-n10,mbpp
L="python3 benchmarks/learning.py run --device cuda --batch-size 256 --threads 2 --store $OUT/learning --sets $SETS"
t0=$(date +%s)
left() { local r=$(( LIMIT_S - $(date +%s) + t0 )); echo $(( r > 1 ? r : 1 )); }
( MODEL=$M TRAIN=runs/train DEV=cuda BUDGET=10 BATCH=256 OUTDIR=runs/cs STORE=$OUT LABEL=gpu_h200 \
    timeout $LIMIT_S bash benchmarks/gpu_critic_sampling.sh > $OUT/cs.log 2>&1 ) &
( timeout $LIMIT_S $L --model $M --label base-gpu > $OUT/base.log 2>&1 ) &
( timeout $LIMIT_S python3 -m coderl.cli pipeline configs/mbpp_smollm2_sft_cpu.yaml --set sft.model=$M \
    --set sft.device=cuda --set sft.threads=null > $OUT/sft.log 2>&1 \
  && timeout $(left) $L --model runs/mbpp_smollm2_sft_cpu/sft --label sft2-gpu >> $OUT/sft.log 2>&1 ) &
( timeout $LIMIT_S python3 -m coderl.cli train-expert --run-dir runs/train --problems mbpp --split train --model $M \
    --device cuda --epochs 2 --lr 1e-4 --val-source mbpp --val-split validation --val-limit 90 --eval-every 0 \
    --save-every 0 > $OUT/expert.log 2>&1 \
  && timeout $(left) $L --model runs/train/expert --label expert-base-gpu >> $OUT/expert.log 2>&1 ) &
wait
pkill -f benchmarks/critic_sampling.py; pkill -f benchmarks/learning.py; sleep 1
echo "all: $(( $(date +%s) - t0 ))s"
# what finished, whatever did not
python3 benchmarks/critic_sampling.py report --out runs/cs --label gpu_h200 --budget 10 --device cuda --store $OUT > /dev/null 2>&1
cp runs/cs/critic_run/critic/metrics.json $OUT/learning/critic_metrics.json 2>/dev/null
for d in runs/cs/repair_run/repair runs/mbpp_smollm2_sft_cpu/sft runs/train/expert; do
  test -f $d/metrics.json && cp $d/metrics.json "$OUT/learning/$(basename $d)_metrics.json"; done
tar czf $OUT/small.tgz -C $OUT learning critic_sampling_gpu_h200.json critic_sampling_gpu_h200.md *.log 2>/dev/null
tar czf $OUT/cs_runs.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='features' --exclude='checkpoints' \
  --exclude='tb' runs/cs 2>/dev/null
ls -la $OUT; tail -n 30 $OUT/critic_sampling_gpu_h200.md 2>/dev/null; grep -h "greedy_pass\|pass@" $OUT/*.log | tail -20
