"""Training-step time on the shapes world: 1 vs 2 processes, and this tree vs an earlier commit, same run.

    python benchmarks/train_step.py [--base REV] [--rounds 3] [--train-steps 6]

Every configuration runs `reneg train` as its own process (quickstart settings: batch 8, DDIM 20, t in the
last 7), interleaved round after round so that drifts of a shared machine hit all alike; the per-step seconds
come from each run's `<out>.log.jsonl` (the first step, warm-up, is dropped), the median over all steps of all
rounds is reported, and ratios are taken between configurations of the same run. `--base REV` also runs the
same command from a `git worktree` of REV (the previous core) for the refactor's same-run ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _run(name: str, src: Path, out: Path, train_steps: int, *, processes: int, threads: int,
         micro: int | None) -> list[float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(src)}
    args = ["train", "--device", "cpu", "--train-steps", str(train_steps), "--batch-size", "8", "--log-every", "0",
            "--out", str(out / f"{name}.safetensors")]
    if micro:
        args += ["--micro-batch-size", str(micro)]
    if src == ROOT / "src":  # the validation listener is new; the revisions compared time the step alone anyway
        args += ["--validate-every", "0"]
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", _port(), "-m", "reneg", *args]
    else:
        command = [sys.executable, "-m", "reneg", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=out)
    if result.returncode:
        raise SystemExit(f"{name} failed: {result.stderr[-1500:]}")
    log = [json.loads(line) for line in (out / f"{name}.log.jsonl").read_text().splitlines()]
    return [entry["seconds"] for entry in log[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also time this git revision's `reneg train` (same run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=6)
    args = parser.parse_args()
    configs = {  # name -> (source tree, processes, threads per process, micro-batch)
        "1 process, 2 threads": (ROOT / "src", 1, 2, None),
        "1 process, 1 thread": (ROOT / "src", 1, 1, None),
        "1 process, 2 threads, micro-batch 4": (ROOT / "src", 1, 2, 4),
        "2 processes x 1 thread (batch 4 each)": (ROOT / "src", 2, 1, None),
    }
    work = Path(tempfile.mkdtemp(prefix="reneg-bench-"))
    if args.base:
        base = work / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        configs[f"1 process, 2 threads, at {args.base}"] = (base / "src", 1, 2, None)
    seconds = {name: [] for name in configs}
    try:
        for round_ in range(args.rounds):
            for index, (name, (src, processes, threads, micro)) in enumerate(configs.items()):
                seconds[name] += _run(f"r{round_}c{index}", src, work, args.train_steps, processes=processes,
                                      threads=threads, micro=micro)
    finally:
        if args.base:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "base")],
                           capture_output=True)
    reference = statistics.median(seconds["1 process, 2 threads"])
    print("| configuration | median s/step (n) | ratio to 1 process, 2 threads |\n| --- | --- | --- |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} ({len(values)}) | {median / reference:.3f} |")


if __name__ == "__main__":
    main()
