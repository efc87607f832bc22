#!/usr/bin/env bash
# Every quick-budget cell reported in benchmarks/RESULTS.md, on this 2-core CPU.
# Two queues run side by side, one torch thread each (two 2-thread processes on two
# cores slow each other down several-fold). Usage: bash benchmarks/run_quick.sh [OUT]
set -euo pipefail
OUT=${1:-runs/quick}
ZINC=${ZINC:-../shared/data/zinc250k_subset.smi}
export OMP_NUM_THREADS=1
B="seqify bench --budget quick --seed 0"
queue_a() {
  $B --modality molecule --dataset qm9 --tokenizer graph --orderer random --generator masked --out $OUT/qm9-graph-random-masked
  $B --modality molecule --dataset qm9 --tokenizer graph --orderer raster --generator causal --out $OUT/qm9-graph-raster-causal
  $B --modality molecule --dataset qm9 --tokenizer graph --orderer bfs --generator causal --out $OUT/qm9-graph-bfs-causal
  $B --modality molecule --dataset qm9 --tokenizer smiles --orderer raster --generator causal --out $OUT/qm9-smiles-raster-causal
  $B --modality molecule --dataset qm9 --orderer learned --out $OUT/qm9-graph-learned-masked
}
queue_b() {
  $B --modality sudoku --orderer learned --out $OUT/sudoku-learned-masked
  $B --modality molecule --dataset zinc250k --data $ZINC --tokenizer graph --orderer random --generator masked \
     --config benchmarks/configs/zinc_masked_quick.toml --out $OUT/zinc-graph-random-masked
  $B --modality molecule --dataset zinc250k --data $ZINC --tokenizer graph --orderer raster --generator causal --out $OUT/zinc-graph-raster-causal
  $B --modality molecule --dataset zinc250k --data $ZINC --tokenizer graph --orderer bfs --generator causal --out $OUT/zinc-graph-bfs-causal
  $B --modality molecule --dataset zinc250k --data $ZINC --tokenizer smiles --orderer raster --generator causal --out $OUT/zinc-smiles-raster-causal
}
mkdir -p $OUT
queue_a > $OUT/queue_a.log 2>&1 &
queue_b > $OUT/queue_b.log 2>&1 &
wait
