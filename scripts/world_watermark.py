"""How much of a watermark design survives the shipped world's 8x VAE (issue 21: the watermark's AUC is 0.713).

    python scripts/world_watermark.py [--scenes 500]

For new clean scenes, each design stamps white bands (random phase and direction) and the shipped VAE
reconstructs both versions. Two measures, per design:
- survival: <recon(stamped) - recon(clean), stamped - clean> / |stamped - clean|^2 (1: the VAE keeps all of it);
- a linear detector's AUC: logistic regression on log |FFT| of the reconstructions (translation-invariant),
  fitted on the first 60% of the scenes (both versions) and scored on the rest, as the ground truth's AUC is
  (stamped vs clean versions of the same new scenes).
Every design is drawn by the world's own `reneg.world.degrade.watermark`; the first is the shipped one.
"""
from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import torch
from diffusers import AutoencoderKL

from reneg.world import WEIGHTS_DIR, degrade
from reneg.world.data import render_scenes
from reneg.world.scenes import sample_scene
from reneg.world.truth import _auc, reconstruct

DESIGNS = {
    "shipped (diagonal, period 16 px along each axis)": degrade.watermark,
    "diagonal, period 32": partial(degrade.watermark, period=32),
    "one axis, period 24": partial(degrade.watermark, period=24, diagonal=False),
    "one axis, period 32": partial(degrade.watermark, period=32, diagonal=False),
}


def round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] through the ground truth's own VAE round trip (8-bit in and out, as its AUC is measured)."""
    return reconstruct(vae, (images.clamp(0, 1) * 255).round().to(torch.uint8)).float() / 255


def features(images: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft2(images.mean(1)).abs().flatten(1).log1p()


def linear_auc(clean: torch.Tensor, stamped: torch.Tensor, fit: int) -> float:
    """AUC of an L2-regularised logistic regression fitted on the first ``fit`` scenes, scored on the rest."""
    x = torch.cat([clean[:fit], stamped[:fit]])
    y = torch.cat([torch.zeros(fit), torch.ones(fit)])
    mean, std = x.mean(0), x.std(0) + 1e-6
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500)

    def closure():
        optimizer.zero_grad()
        logits = ((x - mean) / std) @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + 1e-2 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        score = lambda z: ((z[fit:] - mean) / std) @ w + b  # noqa: E731
        return _auc(score(stamped), score(clean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=500, help="new clean scenes (60%% fit the detector)")
    args = parser.parse_args()
    if args.scenes < 10:
        parser.error("--scenes must be >= 10")
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "sd" / "vae", torch_dtype=torch.float32).eval()
    rng = np.random.default_rng(123)
    scenes = [sample_scene(rng, degraded=False)[0] for _ in range(args.scenes)]
    clean = render_scenes(scenes, torch.Generator().manual_seed(1)).float() / 255
    clean_recon, fit = round_trip(vae, clean), int(0.6 * args.scenes)
    for name, design in DESIGNS.items():
        stamped = design(clean, torch.Generator().manual_seed(2))
        stamped_recon = round_trip(vae, stamped)
        change, kept = stamped - clean, stamped_recon - clean_recon
        survival = float((change * kept).sum() / (change * change).sum())
        auc = linear_auc(features(clean_recon), features(stamped_recon), fit)
        print(f"{name}: survival {survival:.3f}, linear |FFT| detector AUC {auc:.3f}", flush=True)


if __name__ == "__main__":
    main()
