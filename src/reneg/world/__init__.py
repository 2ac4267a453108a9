"""The embedded default: the shapes world, with its own tiny Stable Diffusion, rewards, evaluators and captioner.

The shipped models live in ``weights/`` (fp16 safetensors, diffusers / open_clip /
transformers layouts); ``reneg world-build`` rebuilds them from scratch.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


def is_built() -> bool:
    """Whether the world's weights ship with this installation."""
    return (WEIGHTS_DIR / "world.json").is_file()


@lru_cache(maxsize=1)
def world_config() -> dict:
    """``world.json``: defaults (guidance scale, steps, handcrafted negative) and measured quality."""
    return json.loads((WEIGHTS_DIR / "world.json").read_text())


def path(name: str) -> Path:
    """Directory of a shipped model: ``sd``, ``shapes-hps``, ``shapes-pick``, ``truth``, ``prompts``."""
    return WEIGHTS_DIR / name
