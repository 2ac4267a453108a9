"""The embedded default: the shapes world, with its own tiny Stable Diffusion, rewards, evaluators and captioner.

The shipped models live in ``weights/`` (fp16 safetensors, diffusers / open_clip /
transformers layouts); ``reneg world-build`` rebuilds them from scratch.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: a world directory that ``reneg world-build`` shipped elsewhere, used instead of the installed one (how a
#: gate run or a new build is measured with every command before it is installed)
WEIGHTS_ENV = "RENEG_WORLD_WEIGHTS"


def weights_dir() -> Path:
    """The world in use: ``$RENEG_WORLD_WEIGHTS`` when set, else the installed ``weights/``."""
    return Path(os.environ.get(WEIGHTS_ENV) or WEIGHTS_DIR)


def is_built() -> bool:
    """Whether the world's weights are there (installed, or at ``$RENEG_WORLD_WEIGHTS``)."""
    return (weights_dir() / "world.json").is_file()


@lru_cache(maxsize=4)
def _read_config(directory: str) -> dict:
    return json.loads((Path(directory) / "world.json").read_text())


def world_config() -> dict:
    """``world.json``: defaults (guidance scale, steps, handcrafted negative) and measured quality."""
    return _read_config(str(weights_dir()))


def path(name: str) -> Path:
    """Directory of a shipped model: ``sd``, ``shapes-hps``, ``shapes-pick``, ``truth``, ``prompts``."""
    return weights_dir() / name
