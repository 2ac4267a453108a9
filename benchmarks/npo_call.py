"""NPO's guided UNet call at Stable Diffusion 1.5 size (random weights): time and memory as a ratio to plain CFG.

    OMP_NUM_THREADS=2 python benchmarks/npo_call.py [--latent 32] [--rounds 5] [--device cpu] [--dtype fp32]

One guided call (the negative branch's rows and the prompt's, batch 1 + 1) of the SD1.5 UNet (859.5 M parameters,
the published config), NPO's delta a rank-8 LoRA on ``to_k to_q to_v to_out.0`` (random, B != 0): plain CFG
(theta on both rows), NPO as low-rank products on the negative's rows (``reneg.methods.npo.lowrank``, what
``npo=DIR`` runs), and NPO through peft's mixed-batch adapters (the path before issue 32). A DDIM sampling loop is
T such calls plus the same scheduler work for every variant, so the call's ratio bounds the sampling ratio.
Memory: the UNet's weights plus what each variant keeps (low-rank tensors; peft's adapters).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gpu_real_size import SD15_UNET  # noqa: E402 (run from benchmarks/, as the other scripts)


def main() -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import recurse_remove_peft_layers
    from peft import LoraConfig

    from reneg.core.denoiser import BASE, Branch, GuidedDenoiser
    from reneg.methods.npo.lowrank import LowRankRows, read_offsets
    from reneg.methods.npo.weights import install_npo, save_adapter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=32, help="latent side (64 = 512 px)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(args.device, dtype).eval().requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_k", "to_q", "to_v", "to_out.0"],
                                init_lora_weights=False), adapter_name="delta")
    folder = Path(tempfile.mkdtemp())
    save_adapter(unet, "delta", folder, {"route": "benchmark"})
    recurse_remove_peft_layers(unet)  # theta again, no peft layer left
    del unet.peft_config
    unet._hf_peft_config_loaded = None

    class Pipe:  # what read_offsets / install_npo read of a pipeline
        def __init__(self, unet):
            self.unet = unet

        lora_state_dict = StableDiffusionPipeline.lora_state_dict

        def load_lora_weights(self, directory, adapter_name, weight_name=None):
            self.unet.load_lora_adapter(directory, weight_name=weight_name or "pytorch_lora_weights.safetensors",
                                        prefix="unet", adapter_name=adapter_name)

    pipe = Pipe(unet)
    x = torch.randn(1, 4, args.latent, args.latent, device=args.device)
    t = torch.tensor(500, device=args.device)
    cond = {"encoder_hidden_states": torch.randn(1, 77, 768, device=args.device)}
    negative = {"encoder_hidden_states": torch.randn(1, 77, 768, device=args.device)}

    def call(weights_negative, weights_cond):
        denoiser = GuidedDenoiser(unet, {"negative": Branch(negative, weights_negative),
                                         "cond": Branch(cond, weights_cond)}, guidance_scale=7.5)
        return lambda: denoiser(x, t)

    offsets = read_offsets(pipe, folder, 1.0)
    low_rank_bytes = sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in offsets.values())
    variants = {"plain CFG": call(BASE, BASE), "NPO, low-rank rows (npo=DIR)": call(LowRankRows(offsets),
                                                                                    LowRankRows())}
    base_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
    times = {name: [] for name in [*variants, "NPO, peft mixed batch (before)"]}
    with torch.no_grad():
        for _ in range(args.rounds + 1):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        weights = install_npo(pipe, npo=folder, beta=1.0)  # peft layers from here on: measured last
        peft_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
        run = call(*reversed(weights.branch_weights()))
        for _ in range(args.rounds + 1):
            start = time.perf_counter()
            run()
            times["NPO, peft mixed batch (before)"].append(time.perf_counter() - start)
    base = statistics.median(times["plain CFG"][1:])
    print(f"SD1.5 UNet ({base_bytes / 2**20:.0f} MiB), latent {args.latent}x{args.latent}, {args.device} "
          f"{args.dtype}, torch threads {torch.get_num_threads()}, median of {args.rounds} after a warm-up\n")
    print("| variant | s / guided call | ratio to plain | weights MiB | ratio |\n| --- | --- | --- | --- | --- |")
    extra = {"plain CFG": 0, "NPO, low-rank rows (npo=DIR)": low_rank_bytes,
             "NPO, peft mixed batch (before)": peft_bytes - base_bytes}
    for name, values in times.items():
        median = statistics.median(values[1:])
        print(f"| {name} | {median:.3f} | {median / base:.3f} | {(base_bytes + extra[name]) / 2**20:.1f} | "
              f"{(base_bytes + extra[name]) / base_bytes:.4f} |")


if __name__ == "__main__":
    main()
