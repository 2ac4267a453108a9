"""Preference pairs of the shapes world for NPO's DPO route (NPO Eq. 8), as the documented pairs JSONL.

Each pair: a clean prompt, the preferred image (the scene rendered clean and correct) and the rejected one (the
same scene degraded, or with one attribute wrong: shape, object colour or background), as the world's
preference models were trained (:func:`reneg.world.preference.preference_pairs`). No prompt of the held-out
benchmark is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, save_png, to_pil
from .preference import preference_pairs
from .scenes import benchmark_prompts


def write_world_pairs(out: str | Path, *, count: int = 256, seed: int = 0) -> Path:
    """Render ``count`` pairs into ``out`` (PNG files and ``pairs.jsonl``); returns the JSONL path."""
    out = Path(out)
    held_out = {prompt for prompt, _ in benchmark_prompts()}
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    lines = []
    while len(lines) < count:
        prompts, winners, losers, made_kinds = preference_pairs(count, rng, generator)
        for prompt, winner, loser, kind in zip(prompts, to_pil(winners), to_pil(losers), made_kinds):
            if prompt in held_out or len(lines) >= count:
                continue
            index = len(lines)
            save_png(winner, out / "images" / f"{index:05d}_preferred.png")
            save_png(loser, out / "images" / f"{index:05d}_rejected.png")
            lines.append(json.dumps({"prompt": prompt, "preferred": f"images/{index:05d}_preferred.png",
                                     "rejected": f"images/{index:05d}_rejected.png", "kind": kind}))
    path = out / "pairs.jsonl"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
