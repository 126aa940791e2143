#!/usr/bin/env bash
# One GPU call for the learning table's RL rows (issue 19) and the rest of the critic-sampling
# measurement (issue 18), on the lent H200 (benchmarks/RESULTS.md). The machine is prepared by two
# calls before this one, made back to back (it stays warm between them; ignored paths are not kept
# between calls, /tmp is):
#   call 1: carry .whl .gpu/part_a      -> pip install --no-deps --target /tmp/site .whl/*; cp .gpu/part_a /tmp/gpu/
#   call 2: carry .gpu/sft2 .gpu/train.tgz -> cp -r .gpu/sft2 .gpu/train.tgz /tmp/gpu/
#   call 3: carry .gpu/part_b           -> LIMIT_S=500 bash benchmarks/gpu_learning.sh
# .gpu/part_a + .gpu/part_b: the bundled model's GGUF (98 MB; one call carries at most 64 MiB).
# .gpu/sft2: the SFT model of configs/mbpp_smollm2_sft_cpu.yaml (both prompt shapes), trained on this
#   GPU earlier (the learning table's "sft2" row): every RL row starts from it.
# .gpu/train.tgz: the base model's executed MBPP train samples (8 + greedy per problem), for the
#   critic and the repair model of critic sampling.
# .gpu/ is ignored by git: a new machine has neither input. Make them again (CPU times, 2 cores):
#   sft2:      coderl pipeline configs/mbpp_smollm2_sft_cpu.yaml --set name=sft2 --until train-actor   # ~37 min
#              (RESULTS.md: it reproduces the GPU model's mbpp-heldout 8.40), then cp -r runs/sft2/sft .gpu/sft2
#   train.tgz: coderl pipeline configs/mbpp_smollm2_critic_cpu.yaml --until execute                   # ~63 min
#              then tar czf .gpu/train.tgz -C runs/mbpp_smollm2_critic_cpu samples.jsonl results.jsonl
# Not yet run anywhere: offline RL with per-problem centred returns (add --set rl.baseline=mean to R).
# In parallel, each bounded by LIMIT_S (what finishes is brought back; the rest is said in the logs):
#   og   online RL, group baseline (Dr. GRPO): 8 rounds x 48 problems x 8 programs = 3,072 sampled
#        programs, 6 optimizer steps a round (clipped ratios after the first), lr 1e-4
#   oc   the same with CodeRL's advantage (reward minus the greedy program's; 384 greedy programs more)
#   orl  configs/mbpp_smollm2_offline_rl_cpu.yaml from generate: the SFT model's 8 + greedy programs
#        per train problem (2,992 sampled), a 4-class critic, offline CodeRL RL for a whole epoch at
#        lr 2e-4; and expert iteration on the same samples (train-expert)
#   cs   benchmarks/gpu_critic_sampling.sh: every variant on mbpp-heldout (first 100) and HumanEval
# Models come back as models.tgz.NN (split: a file comes back only under 16 MB); their adapters
# name their base ../sft: put the sft2 adapter beside each (runs/<og|oc|orl>/sft) to load them.
set -u
test -f /tmp/gpu/part_a -a -f .gpu/part_b -a -d /tmp/site -a -d /tmp/gpu/sft2 -a -f /tmp/gpu/train.tgz \
  || { echo "prepared files missing: the machine was not warm"; ls /tmp/gpu; exit 3; }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/logs"
cat /tmp/gpu/part_a .gpu/part_b > .gpu/model.gguf
M=$PWD/.gpu/model.gguf
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 - "$M" <<'EOF'   # the SFT adapter names its base by the path it had where it trained
import json, sys
p = "/tmp/gpu/sft2/adapter_config.json"
c = json.load(open(p)); c["base_model_name_or_path"] = sys.argv[1]; json.dump(c, open(p, "w"), indent=1)
EOF
for r in og oc orl; do mkdir -p runs/$r && rm -rf runs/$r/sft && cp -r /tmp/gpu/sft2 runs/$r/sft; done
mkdir -p runs/train && tar xzf /tmp/gpu/train.tgz -C runs/train
LIMIT_S=${LIMIT_S:-500}
t0=$(date +%s)
left() { local r=$(( LIMIT_S - $(date +%s) + t0 )); echo $(( r > 1 ? r : 1 )); }
C="python3 -m coderl.cli"
ONLINE="--problems mbpp --split train --init sft --rounds 8 --problems-per-round 48 --group-size 8
  --steps-per-round 6 --lr 1e-4 --gen-batch-size 512 --max-new-tokens 256 --temperature 0.8 --top-p 0.95
  --kl-coef 0 --measure-kl --device cuda --workers 12 --timeout 4"
( timeout $LIMIT_S $C train-online --run-dir runs/og $ONLINE --advantage group > $OUT/logs/og.log 2>&1 ) &
( timeout $LIMIT_S $C train-online --run-dir runs/oc $ONLINE --advantage coderl > $OUT/logs/oc.log 2>&1 ) &
R="configs/mbpp_smollm2_offline_rl_cpu.yaml --set name=orl --set generation.batch_size=512
  --set generation.device=cuda --set critic.model=$M --set critic.device=cuda --set critic_score.device=cuda
  --set rl.device=cuda --set rl.batch_size=8 --set rl.grad_accum=1 --set execution.workers=12"
( timeout $LIMIT_S $C pipeline $R --from generate --until evaluate > $OUT/logs/orl.log 2>&1 || exit
  echo "samples ready: $(( $(date +%s) - t0 ))s" >> $OUT/logs/orl.log
  ( timeout $(left) $C train-expert --run-dir runs/orl --problems mbpp --split train --model sft --device cuda \
      --max-per-problem 4 --epochs 2 --batch-size 8 --grad-accum 1 --lr 1e-4 --val-source mbpp \
      --val-split validation --val-limit 90 --save-every 0 > $OUT/logs/expert.log 2>&1 ) &
  timeout $(left) $C pipeline $R --from train-critic --until train-rl >> $OUT/logs/orl.log 2>&1
  wait ) &
( MODEL=$M TRAIN=runs/train DEV=cuda BUDGET=10 BATCH=256 OUTDIR=runs/cs STORE=$OUT/logs LABEL=gpu_h200 \
    timeout $LIMIT_S bash benchmarks/gpu_critic_sampling.sh > $OUT/logs/cs.log 2>&1 ) &
wait
pkill -f benchmarks/critic_sampling.py; pkill -f coderl.cli; sleep 1
echo "all: $(( $(date +%s) - t0 ))s"
python3 benchmarks/critic_sampling.py report --out runs/cs --label gpu_h200_2 --budget 10 --device cuda \
  --store $OUT > /dev/null 2>&1
# what finished (models without checkpoints, TensorBoard files or the copied SFT model)
tar czf $OUT/models.tgz --exclude='checkpoints' --exclude='tb' --exclude='validation' \
  runs/og/online runs/oc/online runs/orl/rl runs/orl/expert 2>/dev/null
split -b 15M -d $OUT/models.tgz $OUT/models.tgz. && rm $OUT/models.tgz
tar czf $OUT/runs.tgz --exclude='checkpoints' --exclude='tb' --exclude='*.safetensors' --exclude='*.pt' \
  --exclude='features' --exclude='sft' --exclude='*.npz' runs/og runs/oc runs/orl runs/cs 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs $(cd $OUT && ls critic_sampling_gpu_h200_2.* 2>/dev/null)
rm -rf $OUT/logs $OUT/critic_sampling_gpu_h200_2.*
ls -la $OUT
for r in og oc; do echo "$r: $(wc -l < runs/$r/online/rounds.jsonl 2>/dev/null) rounds"; tail -n 1 runs/$r/online/rounds.jsonl 2>/dev/null; done
ls runs/orl runs/cs/*/ 2>/dev/null | head -30
