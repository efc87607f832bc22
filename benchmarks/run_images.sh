#!/usr/bin/env bash
# The image figures of benchmarks/RESULTS.md ("Images over tokenizer seeds", issue 21), at the
# quick budget, model seed 0, tokenizer seeds 0, 1, 2, one torch thread per cell, two cells at a
# time. Every cell lands in one matrix folder (runs/img21), so cells that train the same model
# share it and a re-run only reads the index. Then benchmarks/image_seeds.py prints the tables.
set -euo pipefail
OUT=${OUT:-runs/img21}
SEED=${SEED:-0}
SEEDS=${TOKENIZER_SEEDS:-0,1,2}
COMMON=(--budget quick --seed "$SEED" --tokenizer-seeds "$SEEDS" --jobs 2 --threads 1 --out "$OUT")
# 1. tokenizations side by side, each in raster order
seqify modelability --modality image --tokenizers vq,vq-causal,vq-crt,next-scale,flextok,pixels --orderer raster \
    --generator causal "${COMMON[@]}"
# 2. orders on the VQ tokens, each trained and sampled in its own order; next-scale on its own tokens
seqify matrix --modalities image --tokenizers vq --orderers hilbert,spiral,rar,random --generators causal "${COMMON[@]}"
seqify matrix --modalities image --tokenizers next-scale --orderers next-scale --generators causal "${COMMON[@]}"
# 3. the OrderHead finding: the raster-trained VQ models, sampled in other orders
seqify matrix --modalities image --tokenizers vq --orderers spiral,hilbert,random --train-orderer raster \
    --generators causal "${COMMON[@]}"
python benchmarks/image_seeds.py "$OUT"
