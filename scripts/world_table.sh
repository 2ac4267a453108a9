#!/usr/bin/env bash
# The shapes-world table of the README: the quickstart and a longer ReNeg run, then one `reneg eval` over the
# held-out benchmark (400 prompts, 4 categories) with a guidance sweep (SWEEP, default 3,5,10 around world v4's
# default 7.5: the matched-guidance control). Wall times go to BENCHMARKS.md.
set -euo pipefail
OUT=${OUT:-runs/wt}
export OMP_WAIT_POLICY=PASSIVE
/usr/bin/time -f "quickstart train wall %e s" reneg train --device cpu --out "$OUT/quick/negative.safetensors"
/usr/bin/time -f "longer train wall %e s" reneg train --device cpu --train-steps 800 \
    --out "$OUT/long/negative.safetensors"
/usr/bin/time -f "eval wall %e s" reneg eval --device cpu --batch-size 16 \
    --methods "null,handcrafted,embedding=$OUT/quick/negative.safetensors,embedding=$OUT/long/negative.safetensors" \
    --guidance-sweep "${SWEEP:-3,5,10}" --out "$OUT/eval"
