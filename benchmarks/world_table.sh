#!/usr/bin/env bash
# The shapes-world table of the README: quickstart and longer ReNeg runs, then one `reneg eval` over the
# held-out benchmark (400 prompts, 4 categories) with a guidance sweep. Wall times go to BENCHMARKS.md.
set -euo pipefail
OUT=${OUT:-runs/world-table}
LONG_STEPS=${LONG_STEPS:-600}
mkdir -p "$OUT"
/usr/bin/time -f "quickstart train wall %e s" reneg train --out "$OUT/quick/negative.safetensors" 2>&1 | tail -3
/usr/bin/time -f "longer train wall %e s" reneg train --train-steps "$LONG_STEPS" --batch-size 16 --lr 1e-2 \
    --out "$OUT/long/negative.safetensors" 2>&1 | tail -3
/usr/bin/time -f "eval wall %e s" reneg eval \
    --methods "null,handcrafted,embedding=$OUT/quick/negative.safetensors,embedding=$OUT/long/negative.safetensors" \
    --out "$OUT/eval" 2>&1 | tail -3
/usr/bin/time -f "eval with guidance sweep wall %e s" reneg eval \
    --methods "null,handcrafted,embedding=$OUT/long/negative.safetensors" --guidance-sweep 1.5,3,5,7.5,10 \
    --out "$OUT/eval-sweep" 2>&1 | tail -3
