"""DNP time per prompt as a ratio to plain generation of the same prompt, in the same run (issue 17, BENCHMARKS.md).

    OMP_NUM_THREADS=1 python benchmarks/dnp_time.py [--prompts 8] [--rounds 3] [--model shapes] [--device cpu]

For each of the first N 'pair' prompts of the world's benchmark, one prompt at a time (batch 1, the model's
steps), interleaved round after round so that drifts of a shared machine hit every variant alike: plain
generation (null text, CFG), auto-DNP two-term (DNS image + caption + (p, n*)), auto-DNP three-term (DNP Eq. 4,
three model outputs per step), and manual DNP (a given n*: one sampling, no DNS, no captioner). Prints
one markdown row per variant: median seconds per prompt and its ratio to plain generation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reneg.core.rollout import guided_images
from reneg.methods.dnp.images import dnp_images, dns_images, model_captioner
from reneg.models.loading import load_model
from reneg.prompts import load_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    family, defaults = model.family, model.defaults
    steps, scale, resolution = defaults.num_inference_steps, defaults.guidance_scale, model.resolution
    prompts = [p.text for p in load_benchmark(defaults.benchmark) if p.category == "pair"][:args.prompts]
    captioner = model_captioner(model)

    def latents(index):
        return family.initial_latents(1, resolution=resolution, generator=torch.Generator().manual_seed(index))

    def plain(prompt, x_t):
        return guided_images(family, [prompt], family.null_text(), x_t, guidance_scale=scale, steps=steps,
                             resolution=resolution)

    def auto(rule):
        def run(prompt, x_t):
            caption = captioner(dns_images(family, [prompt], x_t, guidance_scale=scale, steps=steps))
            return dnp_images(family, [prompt], caption, x_t, guidance_scale=scale, steps=steps, rule=rule)
        return run

    def manual(prompt, x_t):
        return dnp_images(family, [prompt], [defaults.handcrafted_negative], x_t, guidance_scale=scale, steps=steps)

    variants = {"plain generation (null text)": plain, "auto-DNP, two-term": auto("two-term"),
                "auto-DNP, three-term (Eq. 4)": auto("three-term"), "manual DNP (given n*, two-term)": manual}
    times: dict[str, list[float]] = {name: [] for name in variants}
    plain(prompts[0], latents(0))  # warm-up
    for _ in range(args.rounds):
        for index, prompt in enumerate(prompts):
            x_t = latents(index)
            for name, run in variants.items():
                start = time.perf_counter()
                run(prompt, x_t)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain generation (null text)"])
    print(f"\n{args.model}, {args.device}, {steps} DDIM steps, {resolution} px, batch 1, {len(prompts)} prompts x "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}\n")
    print("| variant | s / prompt (median) | ratio to plain |\n| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    with torch.no_grad():
        main()
