"""Per-sample adaptation time per prompt as a ratio to plain generation of the same prompt, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/adapt_time.py --negative runs/qs/negative.safetensors [--prompts 8]
        [--model shapes] [--device cpu]

On the first N prompts of the model's benchmark, with ``reneg adapt``'s defaults (N = 10 steps, patience 3,
K = 4 selection draws, lr and grad window from the file): plain generation with the global embedding (one
image per prompt) batched and one prompt at a time, then adaptation (``reneg.methods.reneg.adapt.adapt_negatives``) of all N
prompts in one batched run and of each prompt alone. Prints a markdown table: seconds per prompt, the ratio to
plain generation of the same prompts in the same mode (batched / one at a time), and the passes taken.
Adaptation time excludes the generation that follows it (add 1 to the ratio for `generate --per-sample`).
"""

from __future__ import annotations

import argparse
import time

import torch

from reneg.core.rollout import guided_images
from reneg.methods.reneg.adapt import adapt_negatives, build_adapt_reward, load_start, resolve_settings
from reneg.models.loading import load_model
from reneg.prompts import load_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--negative", required=True, help="the global embedding to adapt from")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    family = model.family
    start, metadata = load_start(model, args.negative)
    settings = resolve_settings(model, metadata)
    reward = build_adapt_reward(model, metadata)[0]
    prompts = [p.text for p in load_benchmark(model.defaults.benchmark)][:args.prompts]
    x_T = torch.cat([family.initial_latents(1, resolution=settings.resolution,
                                            generator=torch.Generator().manual_seed(i)) for i in range(len(prompts))])

    def plain(chosen, latents):
        return guided_images(family, chosen, start, latents, guidance_scale=settings.guidance_scale,
                             steps=settings.steps, resolution=settings.resolution)

    def timed(run) -> float:
        begin = time.perf_counter()
        run()
        return time.perf_counter() - begin

    plain(prompts[:1], x_T[:1])  # warm-up
    count = len(prompts)
    plain_batched = timed(lambda: plain(prompts, x_T)) / count
    plain_alone = sum(timed(lambda i=i: plain(prompts[i:i + 1], x_T[i:i + 1])) for i in range(count)) / count
    results = []
    adapt_batched = timed(lambda: results.extend(adapt_negatives(family, reward, prompts, start, settings))) / count
    passes_batched = sum(len(r.rewards) for r in results) / count
    alone = []
    adapt_alone = sum(timed(lambda p=p: alone.extend(adapt_negatives(family, reward, [p], start, settings)))
                      for p in prompts) / count
    passes_alone = sum(len(r.rewards) for r in alone) / count
    device = torch.cuda.get_device_name() if model.pipe.device.type == "cuda" else "CPU"
    print(f"{count} prompts of {model.name}'s benchmark, {settings.steps} steps, K = {settings.selection_draws} "
          f"draws, N = {settings.adapt_steps}, P = {settings.patience}, {device}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| variant | s / prompt | ratio to plain generation (same mode) | passes / prompt |")
    print("| --- | --- | --- | --- |")
    print(f"| plain generation, batched ({count} at once) | {plain_batched:.3f} | 1 | |")
    print(f"| plain generation, one at a time | {plain_alone:.3f} | 1 | |")
    print(f"| adaptation, batched ({count} at once) | {adapt_batched:.2f} | {adapt_batched / plain_batched:.1f} "
          f"| {passes_batched:.1f} |")
    print(f"| adaptation, one at a time | {adapt_alone:.2f} | {adapt_alone / plain_alone:.1f} | {passes_alone:.1f} |")
    print(f"\nbatched adaptation vs one-at-a-time plain generation: {adapt_batched / plain_alone:.1f}x")


if __name__ == "__main__":
    main()
