"""One ReNeg training step on the tiny SD1.5, tiny SDXL and tiny SD3 built-ins, in the same run.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/family_step.py [--rounds 5] [--threads 1]

Each model gets a :class:`reneg.methods.reneg.train.Trainer` with the same settings (batch 4 in micro-batches of 2, 10
sampling steps, t in the last 3, 64 px, the ``random-linear`` reward, fp32, CPU); one warm-up step each, then
``--rounds`` rounds of one step per model, interleaved so that drifts of a shared machine hit all alike. Prints
the median seconds per step, the ratio to the tiny SD1.5, and each denoiser's parameter count (the tiny models
differ in size, so the ratio says what a family's step costs on top of its network, not real-size speed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from reneg.methods.reneg.train import TrainConfig, Trainer

MODELS = {"tiny": "SD1.5 (UNet, DDIM)", "tiny-sdxl": "SDXL (UNet + text_time, DDIM)",
          "tiny-sd3": "SD3 (MM-DiT, flow-matching Euler)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="reneg-family-step-")
    trainers = {name: Trainer(TrainConfig(model=name, reward="random-linear", train_steps=args.rounds + 1,
                                          batch_size=4, micro_batch_size=2, steps=10, grad_window=3, device="cpu",
                                          validate_every=0, out=f"{work}/{name}.safetensors"))
                for name in MODELS}
    for trainer in trainers.values():  # warm-up
        trainer.train_step()
    seconds = {name: [] for name in MODELS}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            seconds[name].append(trainer.train_step().seconds)
    reference = statistics.median(seconds["tiny"])
    print(f"| model | denoiser parameters | median s/step ({args.rounds} steps) | ratio to tiny SD1.5 |")
    print("| --- | --- | --- | --- |")
    for name, values in seconds.items():
        parameters = sum(p.numel() for p in trainers[name].family.model.parameters())
        median = statistics.median(values)
        print(f"| `{name}`: {MODELS[name]} | {parameters / 1e6:.2f} M | {median:.3f} | {median / reference:.2f} |")


if __name__ == "__main__":
    main()
