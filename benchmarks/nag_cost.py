"""The cost of each row of the world's CFG=1 table (issue 35): denoiser passes and wall time per image, one run.

    OMP_NUM_THREADS=1 python benchmarks/nag_cost.py --nag runs/nag-table/nag.safetensors
        [--cfg runs/npo-table/reneg.safetensors] [--scale 5] [--prompts 8] [--rounds 3] [--batch-size 8]
        [--model shapes] [--device cpu]

Methods, interleaved round after round on the same model and the same x_T: no negative at guidance 1 (one pass
a step), NAG with a negative (one pass, a second key/value projection and attention in each cross-attention
layer), CFG with a negative at the model's default guidance (one batched pass on twice the rows). Passes are
counted by a hook on the denoiser (calls, and rows per call relative to the batch). Medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reneg.methods.spec import build_methods, parse_method_spec
from reneg.models.loading import load_model
from reneg.prompts import load_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nag", required=True, help="a negative learned with `reneg train --guidance nag`")
    parser.add_argument("--cfg", default=None, help="a negative learned for CFG (default: the null text)")
    parser.add_argument("--scale", type=float, default=5.0, help="NAG's s")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    defaults = model.defaults
    steps, cfg_scale = defaults.num_inference_steps, defaults.guidance_scale
    prompts = [p.text for p in load_benchmark(defaults.benchmark)][:args.prompts]
    rows = {"no negative, guidance 1": ("null", 1.0),
            f"NAG (learned), s={args.scale:g}": (f"embedding={args.nag}", args.scale),
            f"CFG ({'learned' if args.cfg else 'null text'}), guidance {cfg_scale:g}":
                (f"embedding={args.cfg}" if args.cfg else "null", cfg_scale)}
    specs = {name: parse_method_spec(spec) for name, (spec, _) in rows.items()}
    methods = build_methods(list(specs.values()), model)
    calls = {"count": 0, "rows": 0}

    def count(module, args_, kwargs):
        calls["count"] += 1
        calls["rows"] += (args_[0] if args_ else kwargs["sample"]).shape[0]

    model.family.model.register_forward_pre_hook(count, with_kwargs=True)
    times = {name: [] for name in rows}
    passes = {}
    for _ in range(args.rounds):
        for name, (_, scale) in rows.items():
            calls.update(count=0, rows=0)
            start = time.perf_counter()
            for index in range(0, len(prompts), args.batch_size):
                batch = prompts[index:index + args.batch_size]
                latents = model.family.initial_latents(len(batch), resolution=model.resolution,
                                                       generator=torch.Generator().manual_seed(index))
                methods[specs[name].base].images(model, batch, latents, guidance_scale=scale, steps=steps)
            times[name].append((time.perf_counter() - start) / len(prompts))
            passes[name] = (calls["count"] / (steps * -(-len(prompts) // args.batch_size)),
                            calls["rows"] / (steps * len(prompts)))
    base = statistics.median(times["no negative, guidance 1"])
    print(f"model {args.model}, {steps} steps, {len(prompts)} prompts, batch {args.batch_size}, "
          f"{args.rounds} rounds, device {args.device}, torch threads {torch.get_num_threads()}")
    print("| method | denoiser calls a step | rows per image a step | s / image (median) | x no negative |")
    print("| --- | --- | --- | --- | --- |")
    for name in rows:
        median = statistics.median(times[name])
        print(f"| {name} | {passes[name][0]:g} | {passes[name][1]:g} | {median:.4f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
