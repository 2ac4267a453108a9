"""Short runs of the world's VAE stage: reconstruction PSNR and shapes read back by template matching.

    python benchmarks/world_vae_short.py --steps 1200 --channels 16,32,64,64

Prints one JSON line: held-out PSNR (dB) and the template judge's shape / colour accuracy on the VAE's
reconstructions of 300 clean held-out scenes (renders read 1.0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--channels", default="16,32,64,64")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--save", default=None, help="save the VAE here")
    args = parser.parse_args()
    from reneg.world.data import make_data, render_scenes
    from reneg.world.scenes import caption, sample_scene
    from reneg.world.stages import psnr, train_vae
    from reneg.world.templates import judge_images
    from reneg.world.truth import reconstruct

    channels = tuple(int(c) for c in args.channels.split(","))
    data = make_data(args.images, seed=0)
    start = time.time()
    vae = train_vae(data, steps=args.steps, seed=0, channels=channels, batch_size=args.batch_size)
    seconds = time.time() - start
    if args.save:
        vae.save_pretrained(args.save)
    rng = np.random.default_rng(123)
    drawn = [sample_scene(rng, degraded=False) for _ in range(300)]
    prompts = [caption(s, c, rng, mention=False) for s, c in drawn]
    renders = render_scenes([s for s, _ in drawn], torch.Generator().manual_seed(0))
    judged = judge_images(reconstruct(vae, renders).permute(0, 2, 3, 1).numpy(), prompts)
    print(json.dumps({"channels": channels, "steps": args.steps, "batch_size": args.batch_size,
                      "params_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2), "train_s": round(seconds),
                      "psnr_db": round(psnr(vae, make_data(256, seed=1000)), 2),
                      **{k: round(v, 3) for k, v in judged.items()}}))


if __name__ == "__main__":
    main()
