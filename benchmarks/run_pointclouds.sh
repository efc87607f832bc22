#!/usr/bin/env bash
# The point-cloud figures of benchmarks/RESULTS.md (issues 10 and 19), quick budget, seed 0.
# Each point order of the coords tokenizer gets its own matrix folder (the cell folders
# are named by tokenizer, not by its settings); two run side by side, one thread each.
set -euo pipefail
SEED=${SEED:-0}
sorts() {
  for sort in "$@"; do
    seqify matrix --modalities pointcloud --tokenizers coords --orderers raster,random,rar --generators causal \
        --config "benchmarks/configs/pc_coords_$sort.toml" --budget quick --seed "$SEED" --out "runs/pc-$sort"
    seqify matrix --modalities pointcloud --tokenizers coords --orderers margin --generators masked \
        --config "benchmarks/configs/pc_coords_$sort.toml" --budget quick --seed "$SEED" --out "runs/pc-$sort"
  done
}
export OMP_NUM_THREADS=1
sorts zyx random > runs/pc-a.log 2>&1 &
sorts morton > runs/pc-b.log 2>&1
# coords (zyx) against octree, reconstruction beside modelability; octree is generated in raster order
seqify modelability --modality pointcloud --tokenizers coords,octree --orderer raster --generator causal \
    --budget quick --seed "$SEED" --out runs/pc-tok >> runs/pc-b.log 2>&1
# the octree grown one level per block (issue 19): next-scale
seqify bench --modality pointcloud --tokenizer octree --orderer next-scale --generator causal \
    --budget quick --seed "$SEED" --out runs/pc-octree-nextscale >> runs/pc-b.log 2>&1
wait
