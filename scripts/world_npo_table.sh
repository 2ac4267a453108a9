#!/usr/bin/env bash
# The NPO table of the README (issue 32 item 6) on the shipped shapes world, with npo's release defaults
# (route reward-cfg, lr 1e-5; dpo lr 5e-6, weight decay 1e-2, beta 500): the quickstart ReNeg embedding, then
# reward-cfg delta, DPO delta on world pairs, ReNeg + NPO (delta trained with the embedding on the negative
# branch) and ReNeg + NPO joint; one `reneg eval` on the held-out benchmark (400 prompts) at the world's default
# guidance, with a guidance sweep (SWEEP, default 3,5,10 around v4's 7.5) for the matched-guidance comparison.
set -euo pipefail
OUT=${OUT:-runs/npo-table}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
t() { /usr/bin/time -f "$1 wall %e s" "${@:2}"; }
[ -f "$OUT/reneg.safetensors" ] || t "reneg quickstart" reneg train --device cpu --out "$OUT/reneg.safetensors"
[ -d "$OUT/npo-cfg" ] || t "npo reward-cfg" reneg npo --device cpu --out "$OUT/npo-cfg"
[ -f "$OUT/pairs/pairs.jsonl" ] || t "world pairs" reneg world-pairs --count 256 --out "$OUT/pairs"
[ -d "$OUT/npo-dpo" ] || t "npo dpo" reneg npo --device cpu --route dpo --pairs "$OUT/pairs/pairs.jsonl" \
    --out "$OUT/npo-dpo"
[ -d "$OUT/npo-reneg" ] || t "npo with the embedding" reneg npo --device cpu \
    --negative "$OUT/reneg.safetensors" --out "$OUT/npo-reneg"
[ -d "$OUT/npo-joint" ] || t "npo joint" reneg npo --device cpu --negative "$OUT/reneg.safetensors" --joint \
    --out "$OUT/npo-joint"
t "eval" reneg eval --device cpu --batch-size 16 --guidance-sweep "${SWEEP:-3,5,10}" --out "$OUT/eval" --methods \
"null,handcrafted,embedding=$OUT/reneg.safetensors,npo=$OUT/npo-cfg,npo=$OUT/npo-dpo,\
npo=$OUT/npo-reneg,negative=$OUT/reneg.safetensors,npo=$OUT/npo-joint,negative=$OUT/npo-joint/negative.safetensors"
