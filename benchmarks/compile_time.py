"""torch.compile of the denoiser for no-grad sampling: speed-up, compile time and break-even (issue 22).

    OMP_NUM_THREADS=2 python benchmarks/compile_time.py [--batch 8] [--rounds 7] [--model shapes] [--device cpu]

Times the model's no-grad guided sampling (``guided_images``: the path of generation, eval and the no-grad
prefix of a training step) for one batch of benchmark prompts, eager and with the model's UNet compiled
(``torch.compile``, default mode), interleaved round after round; the first compiled call (the compilation)
is timed apart. Prints the median seconds per batch of each, the speed-up, and the number of batches after
which the compilation has paid for itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reneg.core.rollout import guided_images
from reneg.models.loading import load_model
from reneg.prompts import load_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    family, defaults = model.family, model.defaults
    prompts = [p.text for p in load_benchmark(defaults.benchmark)][:args.batch]
    negative = family.null_text()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run() -> float:
        latents = family.initial_latents(len(prompts), resolution=model.resolution,
                                         generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        guided_images(family, prompts, negative, latents, guidance_scale=defaults.guidance_scale,
                      steps=defaults.num_inference_steps, resolution=model.resolution)
        sync()
        return time.perf_counter() - start

    eager_unet = model.pipe.unet
    compiled_unet = torch.compile(eager_unet)
    run()  # eager warm-up
    model.pipe.unet = compiled_unet
    compile_s = run()  # compiles
    times = {"eager": [], "compiled": []}
    for round_ in range(args.rounds):
        for name in (("eager", "compiled") if round_ % 2 == 0 else ("compiled", "eager")):
            model.pipe.unet = eager_unet if name == "eager" else compiled_unet
            times[name].append(run())
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    saved = eager - compiled
    print(f"{args.model}, {args.device}, batch {len(prompts)}, {defaults.num_inference_steps} steps, "
          f"CFG {defaults.guidance_scale}, median of {args.rounds} interleaved rounds\n")
    print("| variant | s per batch | speed-up | first call (compiles), s | batches to break even |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| eager | {eager:.3f} | 1.00 | | |")
    even = f"{(compile_s - compiled) / saved:.0f}" if saved > 0 else "never"
    print(f"| torch.compile(unet) | {compiled:.3f} | {eager / compiled:.2f} | {compile_s:.1f} | {even} |")


if __name__ == "__main__":
    main()
