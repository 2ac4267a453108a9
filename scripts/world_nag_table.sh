#!/usr/bin/env bash
# The world's CFG=1 table (issue 35 item 4) on the shipped shapes world: a NAG negative learned with
# `reneg train --guidance nag` (the quickstart's settings otherwise; NAG's s = 5, tau 2.5, alpha 0.5: the
# reference's values, fixed before any measurement), then one `reneg eval` on the held-out benchmark of:
# no negative at guidance 1 (null@1), NAG with the null text (where training starts), NAG with the handcrafted negative, NAG with the learned negative, and
# CFG at the world's default guidance with the null text and with the quickstart's learned CFG negative.
# The cost of each method: benchmarks/nag_cost.py (denoiser passes and wall time, one run).
set -euo pipefail
OUT=${OUT:-runs/nag-table}
CFG_EMBEDDING=${CFG_EMBEDDING:-runs/npo-table/reneg.safetensors}
S=${S:-5}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
t() { /usr/bin/time -f "$1 wall %e s" "${@:2}"; }
[ -f "$CFG_EMBEDDING" ] || t "reneg quickstart (cfg)" reneg train --device cpu --out "$CFG_EMBEDDING"
[ -f "$OUT/nag.safetensors" ] || t "reneg train --guidance nag" reneg train --device cpu --guidance nag \
    --guidance-scale "$S" --out "$OUT/nag.safetensors"
t "eval" reneg eval --device cpu --batch-size 16 --out "$OUT/eval" --methods \
"null@1,nag-null@$S,nag-handcrafted@$S,embedding=$OUT/nag.safetensors@$S,null,embedding=$CFG_EMBEDDING"
# The longer run (as the CFG table's 800-step row): 480 steps, the same settings otherwise.
if [ -n "${LONGER:-}" ]; then
  [ -f "$OUT/nag-480.safetensors" ] || t "reneg train --guidance nag (480 steps)" reneg train --device cpu \
      --guidance nag --guidance-scale "$S" --train-steps 480 --out "$OUT/nag-480.safetensors"
  t "eval (with the longer run)" reneg eval --device cpu --batch-size 16 --out "$OUT/eval" --methods \
"null@1,nag-null@$S,nag-handcrafted@$S,embedding=$OUT/nag.safetensors@$S,embedding=$OUT/nag-480.safetensors@$S,\
null,embedding=$CFG_EMBEDDING"
fi
