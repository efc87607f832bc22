#!/usr/bin/env bash
# The image figures of benchmarks/RESULTS.md (issue 9), at the quick budget, seed 0.
# Every cell lands in one matrix folder (runs/img), so cells that train the same model
# share it and a re-run only reads the index.
set -euo pipefail
OUT=${OUT:-runs/img}
SEED=${SEED:-0}
# 1. tokenizations side by side: pixels, vq, next-scale, each in raster order
seqify modelability --modality image --tokenizers pixels,vq,next-scale --orderer raster --generator causal \
    --budget quick --seed "$SEED" --out "$OUT"
# 2. orders on the VQ tokens, each trained and sampled in its own order; next-scale on its own tokens
seqify matrix --modalities image --tokenizers vq --orderers raster,spiral,hilbert,random,rar,next-scale \
    --generators causal --budget quick --seed "$SEED" --out "$OUT"
seqify matrix --modalities image --tokenizers next-scale --orderers next-scale --generators causal \
    --budget quick --seed "$SEED" --out "$OUT"
# 3. the OrderHead finding: one causal model trained in raster order, sampled in other orders
seqify matrix --modalities image --tokenizers vq --orderers spiral,hilbert,random --train-orderer raster \
    --generators causal --budget quick --seed "$SEED" --out "$OUT"
