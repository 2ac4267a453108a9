#!/usr/bin/env bash
# Issue 22's eval target: `reneg eval` on the world's 400 held-out prompts x 3 methods with every world metric, default
# batch 4, one process (2 threads, then 1 thread) and two gloo processes (1 thread each); checks that the two-process
# PNGs and results.json equal the one-process, one-thread run's. With a second tree (e.g. a `git worktree` of an older
# commit) and an embedding of its world, also times that tree: the "before" of the same session.
#   bash benchmarks/eval_target.sh QUICK.safetensors [BEFORE_TREE BEFORE_EMBEDDING]
set -uo pipefail
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
QS=$1 OUT=${OUT:-/tmp/eval-target}
M="null,handcrafted,embedding=$QS"
rm -rf "$OUT" && mkdir -p "$OUT"
OMP_NUM_THREADS=2 /usr/bin/time -f "one process, 2 threads: %e s" python -m reneg eval --device cpu --methods "$M" --out "$OUT/one2" > "$OUT/one2.log" 2>&1
tail -1 "$OUT/one2.log"
OMP_NUM_THREADS=1 /usr/bin/time -f "one process, 1 thread: %e s" python -m reneg eval --device cpu --methods "$M" --out "$OUT/one1" > "$OUT/one1.log" 2>&1
tail -1 "$OUT/one1.log"
OMP_NUM_THREADS=1 /usr/bin/time -f "two processes, 1 thread each: %e s" python -m accelerate.commands.launch --multi_gpu \
    --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 29613 \
    -m reneg eval --device cpu --methods "$M" --out "$OUT/two" > "$OUT/two.log" 2>&1
tail -1 "$OUT/two.log"
python - "$OUT" <<'P'
import hashlib, pathlib, sys
out = pathlib.Path(sys.argv[1])
def digests(run):
    return {p.relative_to(out / run): hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / run / "images").glob("*/*.png")}
one1, one2, two = digests("one1"), digests("one2"), digests("two")
print(f"PNGs equal to one process, 1 thread: two processes {sum(one1[k] == two.get(k) for k in one1)}/{len(one1)}, "
      f"one process, 2 threads {sum(one1[k] == one2.get(k) for k in one1)}/{len(one1)}")
print("results.json of two processes == one process, 1 thread:",
      (out / "two/results.json").read_bytes() == (out / "one1/results.json").read_bytes())
P
if [ $# -ge 3 ]; then
    PYTHONPATH="$2/src" OMP_NUM_THREADS=2 /usr/bin/time -f "before ($2): one process, 2 threads: %e s" \
        python -m reneg eval --device cpu --methods "null,handcrafted,embedding=$3" --out "$OUT/before" > "$OUT/before.log" 2>&1
    tail -1 "$OUT/before.log"
fi
