"""The world's training set: renders (degraded where the scene says so) with captions, in memory."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import degrade
from .render import Scene, Thing, render
from .scenes import benchmark_prompts, training_captions


@dataclass
class WorldData:
    """Images uint8 (N, 3, 64, 64), their captions and scenes."""

    images: torch.Tensor
    captions: list[str]
    scenes: list[Scene]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Images in [-1, 1] and captions at ``indices``."""
        images = self.images[indices].float().contiguous() / 127.5 - 1
        return images, [self.captions[i] for i in indices.tolist()]

    def __len__(self) -> int:
        return len(self.captions)

    def save(self, directory: Path, settings: dict) -> None:
        """Images as safetensors, captions, scenes and the ``settings`` that made them as JSON (nothing pickled);
        written into a temporary directory and renamed, so a cut run leaves no half-written data."""
        directory = Path(directory)
        staging = directory.with_name(directory.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        save_file({"images": self.images.contiguous()}, str(staging / "images.safetensors"))
        (staging / "data.json").write_text(json.dumps({"settings": settings, "captions": self.captions,
                                                       "scenes": [asdict(s) for s in self.scenes]}))
        os.replace(staging, directory)

    @classmethod
    def load(cls, directory: Path, settings: dict) -> "WorldData":
        """The data saved in ``directory``; ValueError if it was made with other ``settings``."""
        directory = Path(directory)
        record = json.loads((directory / "data.json").read_text())
        if record["settings"] != settings:
            raise ValueError(f"{directory} was made with {record['settings']}, not {settings}")
        scenes = [_scene(s) for s in record["scenes"]]
        return cls(load_file(str(directory / "images.safetensors"))["images"], record["captions"], scenes)


def _scene(fields: dict) -> Scene:
    """A :class:`Scene` from its ``asdict`` form (lists back to tuples)."""
    things = tuple(Thing(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
                   for t in fields["things"])
    return Scene(things, fields["background"], tuple(fields["degradations"]), tuple(fields["background_tint"]))


def render_scenes(scenes: list[Scene], generator: torch.Generator, *, chunk: int = 2048,
                  draw: bool = True) -> torch.Tensor:
    """uint8 (N, 3, 64, 64): the renders of ``scenes`` with their degradations applied.

    ``draw=False``: the scenes' scene defects are already drawn (their things are what is drawn); only the
    image defects are applied."""
    out = []
    # scene degradations (cropped, extra object) draw from a numpy generator seeded by ``generator``
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    for start in range(0, len(scenes), chunk):
        part = scenes[start:start + chunk]
        drawn = [degrade.drawn(s, rng) if s.degradations and draw else s for s in part]
        images = torch.from_numpy(np.stack([render(s) for s in drawn])).permute(0, 3, 1, 2).float() / 255
        images = degrade.apply(images, [s.degradations for s in part], generator)
        out.append((images * 255).round().to(torch.uint8).contiguous())
    return torch.cat(out)


def make_data(count: int, *, seed: int) -> WorldData:
    """``count`` (image, caption) pairs, none of whose captions is a benchmark prompt."""
    held_out = {prompt for prompt, _ in benchmark_prompts()}
    pairs = training_captions(count, seed=seed, exclude=held_out)
    generator = torch.Generator().manual_seed(seed)
    images = render_scenes([scene for scene, _ in pairs], generator)
    return WorldData(images, [c for _, c in pairs], [s for s, _ in pairs])


def loader(count: int, batch_size: int, *, seed: int):
    """Endless random index batches, deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(count, (batch_size,), generator=generator)

