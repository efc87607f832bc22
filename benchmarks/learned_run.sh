#!/usr/bin/env bash
# Issue 11, the learned order on QM9 at the quick budget: every figure in
# benchmarks/RESULTS.md ("Learned generation order, re-measured"), one run at a time, one torch thread (a shared 2-core CPU).
# Usage: bash benchmarks/learned_run.sh [OUT]   (OUT defaults to runs/learned)
set -euo pipefail
OUT=${1:-runs/learned}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
# the learned order's estimate walks 45 slots x 8 orders per molecule: score the first 100
# test molecules in every cell (as RESULTS.md did for issue 4)
printf '[eval]\nn_test = 100\n' > "$OUT/eval100.toml"
B="seqify bench --budget quick --seed 0 --modality molecule --dataset qm9 --config $OUT/eval100.toml"

# figure: learned vs random (and bfs, from RESULTS.md) at 1,500 steps
$B --orderer learned --out "$OUT/qm9-learned"
$B --orderer random --generator masked --out "$OUT/qm9-random"
# the random arm scored with the learned arm's estimator (K = 8 orders, IW estimate and bound)
python benchmarks/learned_rescore.py --run "$OUT/qm9-random" --n 100 --orders 8
# the random arm given the learned arm's training wall-clock (992 s here)
$B --orderer random --generator masked --steps 5000 --out "$OUT/qm9-random-5000"
python benchmarks/learned_rescore.py --run "$OUT/qm9-random-5000" --n 100 --orders 8

# ablation probes: 300 steps, 50 test molecules, 100 samples, 32 diagnostic templates
P="python benchmarks/learned_probe.py --steps 300 --n-test 50 --n-samples 100 --set diagnostic_items=32 --every 20"
$P --out "$OUT/probe-exact"
$P --out "$OUT/probe-lr10" --grouped --set policy_lr_scale=10
$P --out "$OUT/probe-sharpen" --grouped --set policy_lr_scale=10 --set q_entropy_bonus=-0.9 --set entropy_anneal=0.6
$P --out "$OUT/probe-psharpen" --grouped --set policy_lr_scale=10 --set p_entropy_bonus=-0.5 --set entropy_anneal=0.6
$P --out "$OUT/probe-onestep" --set estimator=one-step --set orders_per_item=4 --set warm_start=0.3 \
   --set entropy_bonus=0.01
# what a kind-level order would pay on the uniform-policy model
python benchmarks/learned_kind_orders.py --run "$OUT/probe-exact" --n 100
