"""The world card: a grid of real renders beside generated samples, for the README / docs/world.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import render_scenes
from .scenes import caption, sample_scene


def card_grid(out: str | Path, *, count: int = 8, seed: int = 3, negatives: dict[str, torch.Tensor] | None = None,
              model=None) -> list[str]:
    """Write a PNG grid: row 1 renders of ``count`` scenes, then one row per negative (generations of their captions).

    Returns the captions, left to right.
    """
    from ..embedding import null_text_embedding
    from ..generate import generate_images
    from ..models.loading import load_model

    model = model or load_model("shapes")
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, degraded=False) for _ in range(count)]
    prompts = [caption(s, c, rng, mention=False) for s, c in scenes]
    rows = [render_scenes([s for s, _ in scenes], torch.Generator().manual_seed(seed)).permute(0, 2, 3, 1).numpy()]
    negatives = negatives or {"null": null_text_embedding(model.pipe)}
    for negative in negatives.values():
        images = torch.cat(list(generate_images(
            model, prompts, negative, guidance_scale=model.defaults.guidance_scale,
            steps=model.defaults.num_inference_steps, resolution=64, generator=torch.Generator().manual_seed(seed),
            batch_size=count)))
        rows.append((images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
    return prompts
