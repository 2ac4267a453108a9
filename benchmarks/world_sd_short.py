"""Short runs of the world's text encoder + UNet stage, judged by template matching: what each recipe change buys.

    python benchmarks/world_sd_short.py --steps 600 --variant v3          # v3 geometry, v3 recipe
    python benchmarks/world_sd_short.py --steps 600 --variant v2-geometry # objects of v2's sizes

Trains on renders of ``--images`` scenes encoded by a fixed VAE (so the runs compare the sd stage alone),
then generates 160 held-out clean prompts (DDIM 20, guidance 3, seed 0) and reads shape, colour and background
with :mod:`reneg.world.templates` (no trained scorer: the v3 scorer does not exist before the build). Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

VARIANTS = {  # name -> (SDRecipe changes, geometry)
    "v2-recipe": ({"text_length": 77}, "v3"),
    "v3": ({}, "v3"),
    "v2-geometry": ({}, "v2"),
    "lr-1e-3": ({"lr": 1e-3}, "v3"),
    "v-prediction": ({"prediction_type": "v_prediction"}, "v3"),
    "batch-32": ({"batch_size": 32}, "v3"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--variant", choices=VARIANTS, default="v3")
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--ema-decay", type=float, default=None, help="override the recipe's EMA decay (0.999 "
                        "averages over ~1000 steps: a short run's EMA is mostly its early weights; 0 keeps the raw)")
    parser.add_argument("--vae", default=None, help="a VAE directory (default: the shipped world's), e.g. "
                        "runs/world-build/vae from `reneg world-build --until recon`")
    args = parser.parse_args()
    changes, geometry = VARIANTS[args.variant]
    from reneg.world import vocab

    if geometry == "v2":
        vocab.SIZES.update({"small": 0.16, "medium": 0.23, "large": 0.32})
    from diffusers import AutoencoderKL

    from reneg.world import WEIGHTS_DIR
    from reneg.world.data import make_data
    from reneg.world.pipeline import assemble_pipeline
    from reneg.world.scenes import benchmark_prompts
    from reneg.world.stages import SDRecipe, encode, train_sd
    from reneg.world.templates import judge_pipeline

    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(args.vae or WEIGHTS_DIR / "sd" / "vae", torch_dtype=torch.float32).eval()
    vae.requires_grad_(False)
    data = make_data(args.images, seed=0)
    latents = encode(vae, data) * vae.config.scaling_factor
    if args.ema_decay is not None:
        changes = {**changes, "ema_decay": args.ema_decay}
    recipe = SDRecipe(**changes)
    start = time.time()
    text_encoder, unet, tokenizer = train_sd(data, latents, steps=args.steps, seed=0, recipe=recipe)
    seconds = time.time() - start
    pipe = assemble_pipeline(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                             prediction_type=recipe.prediction_type)
    prompts = [p for p, c in benchmark_prompts()][:: max(1, 400 // args.prompts)][: args.prompts]
    judged = judge_pipeline(pipe, prompts)
    print(json.dumps({"variant": args.variant, "steps": args.steps, "ema_decay": recipe.ema_decay, "images": args.images, "train_s": round(seconds),
                      **{k: round(v, 3) for k, v in judged.items()}}))


if __name__ == "__main__":
    main()
