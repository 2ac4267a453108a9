"""An NPO training step's time as a ratio to a ReNeg step on the same model, in the same run (issue 18).

    OMP_NUM_THREADS=1 python benchmarks/npo_train_step.py [--rounds 8] [--batch-size 8] [--model shapes]

Steps interleaved one after the other (same global batch, DDIM steps, grad window and seeds): ReNeg (the
negative embedding learned, `reneg train`), NPO reward-cfg (delta on the negative branch, one mixed-batch call
per step), NPO reward (Eq. 7, theta + delta on both branches) and NPO dpo (reversed pairs; no rollout, one
UNet forward with delta and one without for the reference). Median seconds per step, the first step dropped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from reneg.cli import main as reneg
from reneg.methods.npo.train import NPOConfig, NPOTrainer
from reneg.methods.reneg.train import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="shapes")
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    if reneg(["world-pairs", "--out", f"{work}/pairs", "--count", "64", "--seed", "0"]):  # the world's command
        raise SystemExit("reneg world-pairs failed")
    pairs = f"{work}/pairs/pairs.jsonl"
    common = dict(model=args.model, batch_size=args.batch_size, device="cpu")
    steppers = {
        "ReNeg (embedding)": Trainer(TrainConfig(**common, out=f"{work}/n.safetensors",
                                                 train_steps=args.rounds + 1)).train_step,
        "NPO reward-cfg (delta on the negative branch)":
            NPOTrainer(NPOConfig(**common, route="reward-cfg", out=f"{work}/a")).step,
        "NPO reward (Eq. 7, theta + delta on both branches)":
            NPOTrainer(NPOConfig(**common, route="reward", out=f"{work}/b")).step,
        "NPO dpo (reversed pairs, Eq. 8)":
            NPOTrainer(NPOConfig(**common, route="dpo", pairs=str(pairs), out=f"{work}/c")).step,
    }
    times = {name: [] for name in steppers}
    cpu_times = {name: [] for name in steppers}  # this process's CPU time: robust to a shared machine
    for round_index in range(args.rounds + 1):
        for name, step in steppers.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            if round_index:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    base = statistics.median(times["ReNeg (embedding)"])
    cpu_base = statistics.median(cpu_times["ReNeg (embedding)"])
    print(f"\n{args.model}, cpu, batch {args.batch_size}, {args.rounds} steps each after one warm-up, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| step | wall s / step (median) | ratio to ReNeg | CPU s / step (median) | ratio to ReNeg |\n"
          "| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        median, cpu_median = statistics.median(values), statistics.median(cpu_times[name])
        print(f"| {name} | {median:.3f} | {median / base:.2f} | {cpu_median:.3f} | {cpu_median / cpu_base:.2f} |")


if __name__ == "__main__":
    main()
