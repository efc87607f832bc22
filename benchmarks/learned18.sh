#!/usr/bin/env bash
# Issue 18, the learned order with a structured start: every figure of benchmarks/RESULTS.md
# ("The learned order learns: a structured start (issue 18)"), one torch thread per run.
# Usage: bash benchmarks/learned18.sh [OUT]   (OUT defaults to runs/l18)
set -euo pipefail
OUT=${1:-runs/l18}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
printf '[eval]\nn_test = 100\n' > "$OUT/eval100.toml"
printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 3.0\nvalue_spread = 1.0\nvalue_spread_temperature = 1000.0\n' > "$OUT/q1.toml"
B="seqify bench --budget quick --seed 0 --modality molecule --dataset qm9 --orderer learned"

# QM9: the learned order on the causal generator (prior T = 1), and on the masked one (T = 3, uniform value spread)
$B --generator causal --config "$OUT/eval100.toml" --out "$OUT/qm9-learned-causal"
for S in 1 2; do  # two more seeds of the causal arm (the three-seed table)
  ${B/--seed 0/--seed $S} --generator causal --config "$OUT/eval100.toml" --out "$OUT/qm9-learned-causal-s$S"
done
$B --config "$OUT/q1.toml" --out "$OUT/qm9-learned-t3s"

# The causal arm's prior temperature, three seeds: T = 0.5, and the shipped config (T = 0.25,
# the temperature the validation bound picks)
printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 0.5\n' > "$OUT/t05.toml"
for S in 0 1 2; do
  ${B/--seed 0/--seed $S} --generator causal --config "$OUT/t05.toml" --out "$OUT/qm9-causal-t05-s$S"
  ${B/--seed 0/--seed $S} --generator causal --config benchmarks/configs/qm9_learned_causal_quick.toml \
    --out "$OUT/qm9-causal-t025-s$S"
done

# the references on the same 100 test molecules, three seeds: bfs (causal), and random-order
# training given the causal learned arm's compute (4.5x its steps), scored with the learned estimator
R="seqify bench --budget quick --modality molecule --dataset qm9 --config $OUT/eval100.toml"
for S in 0 1 2; do
  $R --seed "$S" --orderer bfs --generator causal --out "$OUT/qm9-bfs-s$S"
  $R --seed "$S" --orderer random --generator masked --steps 6750 --out "$OUT/qm9-random-6750-s$S"
  python benchmarks/learned_rescore.py --run "$OUT/qm9-random-6750-s$S" --n 100 --orders 8
done

# per-step cost against the reference arm, in one process
python benchmarks/learned_cost.py --steps 30 --repeats 2
python benchmarks/learned_cost.py --steps 30 --repeats 2 --set orders_share_batch=true
python benchmarks/learned_cost.py --steps 20 --repeats 2 --generator causal --reference bfs

# ablation probes: 300 steps, 50 test molecules, 100 samples, 32 diagnostic templates
P="python benchmarks/learned_probe.py --steps 300 --n-test 50 --n-samples 100 --set diagnostic_items=32 --every 50"
$P --out "$OUT/probe-prior"
$P --out "$OUT/probe-prior-spread" --set value_spread=1.0
$P --out "$OUT/probe-spread-uniform" --set value_spread=1.0 --set value_spread_temperature=1000
$P --out "$OUT/probe-t3-spread" --set value_spread=1.0 --set value_spread_temperature=1000 --set prior_temperature=3

# Sudoku: the policy started from margin, three seeds (greedy policy order), and sampled orders
for S in 0 1 2; do
  seqify bench --modality sudoku --orderer learned --budget quick --seed "$S" \
    --config benchmarks/configs/sudoku_learned_margin.toml --out "$OUT/sudoku-margin-s$S"
  python benchmarks/learned_complete.py --run "$OUT/sudoku-margin-s$S" --out "$OUT/sudoku-margin-s$S-sampled" \
    --set greedy_order=false
done

# ---- issue 18, second session: the causal arm with shared rows, in the stream layout, at T = 0.125
C="seqify bench --budget quick --modality molecule --dataset qm9 --orderer learned --generator causal"
printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 0.25\norders_share_batch = true\n' > "$OUT/share.toml"
printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 0.25\norders_share_batch = true\ncausal_layout = "stream"\n' \
  > "$OUT/stream.toml"
for G in 0 0.1; do
  printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 0.25\norders_share_batch = true\ncausal_layout = "stream"\npolicy_trunk_grad = %s\n' \
    "$G" > "$OUT/stream-g$G.toml"
  $C --seed 0 --config "$OUT/stream-g$G.toml" --out "$OUT/qm9-causal-stream-g$G-s0"
done
printf '[eval]\nn_test = 100\n[orderer]\nprior_temperature = 0.125\norders_share_batch = true\ncausal_layout = "stream"\npolicy_trunk_grad = 0.1\n' \
  > "$OUT/stream-g0.1-t0125.toml"
$C --seed 0 --config "$OUT/stream-g0.1-t0125.toml" --out "$OUT/qm9-causal-stream-g0.1-t0125-s0"
for S in 0 1; do $C --seed "$S" --config "$OUT/share.toml" --out "$OUT/qm9-causal-share-s$S"; done
$C --seed 0 --config "$OUT/stream.toml" --out "$OUT/qm9-causal-stream-s0"
for S in 0 1 2; do
  $C --seed "$S" --config benchmarks/configs/qm9_learned_causal_t0125_quick.toml --out "$OUT/qm9-causal-share-t0125-s$S"
  $C --seed "$S" --config benchmarks/configs/qm9_learned_causal_stream_quick.toml --out "$OUT/qm9-causal-stream-t0125-s$S"
done
for RUN in "$OUT"/qm9-causal-share-* "$OUT"/qm9-causal-stream-* "$OUT"/qm9-causal-t025-s*; do
  python benchmarks/learned_vs_prior.py --run "$RUN" --n 100 --orders 8
done
for SET in "--set orders_share_batch=true --set prior_temperature=0.125" \
  "--set orders_share_batch=true --set prior_temperature=0.125 --set causal_layout=stream --set policy_trunk_grad=0.1 --set policy_lr_scale=3.0"; do
  python benchmarks/learned_cost.py --steps 20 --repeats 2 --generator causal --reference random --reference-generator masked $SET
  python benchmarks/learned_cost.py --steps 20 --repeats 2 --generator causal --reference bfs $SET
done
# one order per item (K = 1) in the stream layout: the arm within 1 bit of bfs in every seed
for S in 0 1 2; do
  $C --seed "$S" --config benchmarks/configs/qm9_learned_causal_stream_k1_quick.toml --out "$OUT/qm9-causal-stream-k1-s$S"
  python benchmarks/learned_vs_prior.py --run "$OUT/qm9-causal-stream-k1-s$S" --n 100 --orders 8
done
K1="--set orders_per_item=1 --set prior_temperature=0.125 --set causal_layout=stream --set policy_trunk_grad=0.1 --set policy_lr_scale=3.0"
python benchmarks/learned_cost.py --steps 40 --repeats 3 --generator causal --reference random --reference-generator masked $K1
python benchmarks/learned_cost.py --steps 20 --repeats 2 --generator causal --reference bfs $K1
