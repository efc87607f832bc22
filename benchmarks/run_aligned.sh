#!/usr/bin/env bash
# The tokenization-level alignment figures of benchmarks/RESULTS.md (issue 12), at the
# quick budget, seed 0: one causal transformer trained in raster order on each
# tokenization of MNIST, then the CRT weight swept (vq-crt's default is crt_weight 0.3).
# A re-run only reads each folder's index.
set -euo pipefail
OUT=${OUT:-runs/aligned}
SEED=${SEED:-0}
# 1 and 2. every tokenization on the reconstruction-modelability plane, with FD of its samples
seqify modelability --modality image --tokenizers pixels,vq,vq-causal,vq-crt,next-scale,flextok \
    --orderer raster --generator causal --budget quick --seed "$SEED" --out "$OUT"
# 3. the CRT weight: 0, 0.003, 0.03 and 3, next to the default 0.3 above (training with
#    crt_weight 0 is exactly vq's, tests/test_image_aligned.py: that cell checks it end to end)
for weight in 0 0.003 0.03 3; do
    seqify modelability --modality image --tokenizers vq-crt --config "benchmarks/configs/image_crt_w$weight.toml" \
        --orderer raster --generator causal --budget quick --seed "$SEED" --out "$OUT-crt-w$weight"
done
python benchmarks/crt_sweep.py "$OUT"
# the reconstruction of each flextok prefix on the test split, from the fitted tokenizer of step 1
python benchmarks/flextok_prefixes.py "$OUT/cells/image-flextok-raster-causal"
# code usage against what the context saves, for every learned tokenization
python benchmarks/code_stats.py "$OUT"/cells/image-{vq,vq-causal,vq-crt,next-scale,flextok}-raster-causal "$OUT"-crt-w{0,0.003,0.03,3}/cells/image-vq-crt-raster-causal
