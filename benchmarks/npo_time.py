"""NPO inference time and memory per image as a ratio to plain CFG on the same model, in the same run (issue 18).

    OMP_NUM_THREADS=1 python benchmarks/npo_time.py --npo runs/npo-reward [--lora DIR] [--prompts 6] [--rounds 3]
        [--batch-size 1] [--model shapes] [--device cpu]

Variants, interleaved round after round, each on its own copy of the model: plain CFG (null text, one batched
UNet call per step, no adapters); NPO as reneg's ``npo=DIR`` runs it (theta for the prompt's rows, theta +
beta*delta for the negative's as plain low-rank products on those rows, ``reneg.methods.npo.lowrank``); NPO in
one call through peft's mixed-batch adapters (the path before issue 32); NPO in two calls (peft's
``set_adapters`` per branch). Memory: the UNet's weights plus what each path keeps (low-rank tensors; peft's
adapters); on CUDA also the peak allocated memory of each variant (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reneg.core.denoiser import AdapterWeights
from reneg.core.rollout import guided_images, rollout, text_branches
from reneg.methods.npo.weights import install_npo
from reneg.methods.spec import build_methods, parse_method_spec
from reneg.models.loading import load_model
from reneg.prompts import load_benchmark


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npo", required=True)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    args = parser.parse_args()

    dtype = torch.float16 if args.precision == "fp16" else torch.float32
    model = load_model(args.model, device=args.device, dtype=dtype)
    family, defaults = model.family, model.defaults
    steps, scale, resolution = defaults.num_inference_steps, defaults.guidance_scale, model.resolution
    prompts = [p.text for p in load_benchmark(defaults.benchmark)][:args.prompts * args.batch_size]
    batches = [prompts[i:i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
    plain_model = load_model(args.model, device=args.device, dtype=dtype)  # the same weights, no adapters loaded
    peft_model = load_model(args.model, device=args.device, dtype=dtype)
    unet = family.model
    base_bytes = _bytes(unet.parameters())
    spec = parse_method_spec(f"npo={args.npo},beta={args.beta}")
    npo = build_methods([spec], model)[spec.base]
    cond_weights, negative_weights = npo.weights.branch_weights()
    low_rank_bytes = base_bytes + _bytes(t for pair in negative_weights.offsets.values() for t in pair)
    peft_weights = install_npo(peft_model.pipe, npo=args.npo, beta=args.beta)
    peft_unet = peft_model.family.model
    peft_bytes = _bytes(peft_unet.parameters())
    delta = [n for n in peft_unet.peft_config if n.startswith("lora_")][0]

    def latents(index):
        return family.initial_latents(args.batch_size, resolution=resolution,
                                      generator=torch.Generator().manual_seed(index))

    def plain(batch, x_t):
        plain_family = plain_model.family
        return guided_images(plain_family, batch, plain_family.null_text(), x_t, guidance_scale=scale, steps=steps,
                             resolution=resolution)

    def one_call(batch, x_t):
        return npo.images(model, batch, x_t, guidance_scale=scale, steps=steps)

    peft_family = peft_model.family

    def peft_one_call(batch, x_t):
        cond, negative = peft_weights.branch_weights()
        branches = text_branches(peft_family, peft_family.encode(batch), peft_family.null_text(),
                                 resolution=resolution, negative_weights=negative)
        branches["cond"].weights = cond
        return rollout(peft_family, branches, x_t, steps=steps, guidance_scale=scale)

    def two_calls(batch, x_t):
        branches = text_branches(peft_family, peft_family.encode(batch), peft_family.null_text(),
                                 resolution=resolution, negative_weights=AdapterWeights((delta,), (args.beta,)))
        return rollout(peft_family, branches, x_t, steps=steps, guidance_scale=scale)

    variants = {"plain CFG (null text)": plain, "NPO, low-rank rows (npo=DIR)": one_call,
                "NPO, one call, peft mixed batch (before)": peft_one_call,
                "NPO, two calls (peft set_adapters per branch)": two_calls}
    memory = {"plain CFG (null text)": base_bytes, "NPO, low-rank rows (npo=DIR)": low_rank_bytes,
              "NPO, one call, peft mixed batch (before)": peft_bytes,
              "NPO, two calls (peft set_adapters per branch)": peft_bytes}
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}  # this process's CPU time: robust to
    # other processes on a shared machine (one thread: CPU time ~ work done)
    peaks: dict[str, int] = {name: 0 for name in variants}
    cuda = torch.device(args.device).type == "cuda"
    for run in variants.values():  # warm-up
        run(batches[0], latents(0))
    for _ in range(args.rounds):
        for index, batch in enumerate(batches):
            x_t = latents(index)
            for name, run in variants.items():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start, cpu_start = time.perf_counter(), time.process_time()
                run(batch, x_t)
                if cuda:
                    torch.cuda.synchronize()
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated())
                times[name].append((time.perf_counter() - start) / len(batch))
                cpu_times[name].append((time.process_time() - cpu_start) / len(batch))
    base = statistics.median(times["plain CFG (null text)"])
    cpu_base = statistics.median(cpu_times["plain CFG (null text)"])
    print(f"\n{args.model}, {args.device}, {args.precision}, {steps} DDIM steps, {resolution} px, batch "
          f"{args.batch_size}, {len(batches)} batches x {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print("| variant | wall s / image (median) | ratio to plain | CPU s / image (median) | ratio to plain | weights "
          "MiB | ratio |" + (" peak MiB | ratio |" if cuda else "") + "\n| --- | --- | --- | --- | --- | --- | --- |"
          + (" --- | --- |" if cuda else ""))
    for name, values in times.items():
        median = statistics.median(values)
        cpu_median = statistics.median(cpu_times[name])
        row = (f"| {name} | {median:.4f} | {median / base:.3f} | {cpu_median:.4f} | {cpu_median / cpu_base:.3f} | "
               f"{memory[name] / 2**20:.2f} | {memory[name] / base_bytes:.4f} |")
        if cuda:
            peak, plain_peak = peaks[name], peaks["plain CFG (null text)"]
            row += f" {peak / 2**20:.1f} | {peak / plain_peak:.3f} |"
        print(row)


if __name__ == "__main__":
    with torch.no_grad():
        main()
