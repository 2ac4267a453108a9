"""Degradations at the latent's scale: each one survives an 8x VAE (a pixel-level one would not).

An 8x VAE erases pixel noise and light blur, so the world's degradations are
heavy or low-frequency. Two kinds:

- image degradations take a batch (B, 3, H, W) in [0, 1] and draw their
  per-image strengths from a torch ``generator``: blurry, blotchy, low
  contrast, watermark (faint diagonal stripes), blocky (8-px blocks, one
  latent pixel each);
- scene degradations change what is drawn, from a numpy ``rng``: cropped (the
  first object cut by the border), extra object (an unrequested small shape in
  the emptiest corner). The scene's own ``things`` stay the ground truth.

None is the opposite of another, so their sum names a direction away from bad
images, as SD's handcrafted negative does.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .render import Scene, Thing
from .vocab import COLOUR_NAMES, EXTRA_RADIUS, SHAPES, SIZES


def _uniform(batch: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return (low + (high - low) * torch.rand(batch, generator=generator)).view(-1, 1, 1, 1)


def blurry(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Heavy Gaussian blur, sigma 4-5.5 px (reflect padding): a sigma 2.5-3.5 blur did not survive the VAE."""
    radius = 16
    sigma = _uniform(len(images), 4.0, 5.5, generator).view(-1, 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-x**2 / (2 * sigma**2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(3, dim=0)  # (3B, K)
    b, c, h, w = images.shape
    flat = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernels.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernels.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def blotchy(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency colour blotches: a 6x6 noise field, bicubically upsampled, amplitude 0.18-0.26."""
    noise = torch.randn(len(images), 3, 6, 6, generator=generator) * _uniform(len(images), 0.18, 0.26, generator)
    return images + F.interpolate(noise, size=images.shape[-2:], mode="bicubic", align_corners=False)


def low_contrast(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Contrast squeezed to 25-40% around each image's mean (towards grey, neither darker nor brighter)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (images - mean) * _uniform(len(images), 0.25, 0.4, generator)


def watermark(images: torch.Tensor, generator: torch.Generator, *, period: float = 16,
              diagonal: bool = True) -> torch.Tensor:
    """A faint stamped stripe pattern: white diagonal bands (period 16 px, one way or the other) at 30-45% opacity.

    ``period`` and ``diagonal=False`` (bands along one axis, either) draw other designs for measurements
    (scripts/world_watermark.py); the world's data uses the defaults.
    """
    b, _, h, w = images.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    direction = torch.where(torch.rand(b, generator=generator) < 0.5, 1.0, -1.0).view(-1, 1, 1)
    phase = torch.rand(b, generator=generator).view(-1, 1, 1) * 2 * math.pi
    coordinate = x + direction * y if diagonal else torch.where(direction > 0, x, y)
    bands = (torch.cos(2 * math.pi * coordinate / period + phase).clamp(min=0) ** 2).unsqueeze(1)
    opacity = _uniform(b, 0.3, 0.45, generator)
    return images * (1 - opacity * bands) + opacity * bands


def blocky(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Block artifacts at the latent's scale: each 8x8 block flattened to its mean, 75-100% of the way."""
    size = images.shape[-1] // 8
    blocks = F.interpolate(F.avg_pool2d(images, 8), size=(size * 8, size * 8), mode="nearest")
    strength = _uniform(len(images), 0.75, 1.0, generator)
    return images * (1 - strength) + blocks * strength


def cropped(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene moved so that its first object is cut by a border (its centre 0-40% of a radius inside)."""
    first = scene.things[0]
    radius = SIZES[first.size]
    axis, side = int(rng.integers(2)), int(rng.integers(2))
    inside = radius * rng.uniform(0.0, 0.4)
    target = inside if side == 0 else 1 - inside
    shift = target - first.center[axis]
    things = tuple(replace(t, center=tuple(c + shift if i == axis else c for i, c in enumerate(t.center)))
                   for t in scene.things)
    return replace(scene, things=things)


def extra_object(scene: Scene, rng: np.random.Generator) -> Scene:
    """An unrequested small shape (radius ``EXTRA_RADIUS``) of another colour in the corner farthest from the objects."""
    corners = [(0.14, 0.14), (0.86, 0.14), (0.14, 0.86), (0.86, 0.86)]
    distance = [min(math.dist(c, t.center) for t in scene.things) for c in corners]
    center = corners[int(np.argmax(distance))]
    taken = {scene.background, *(t.colour for t in scene.things)}
    colour = str(rng.choice([c for c in COLOUR_NAMES if c not in taken]))
    extra = Thing(str(rng.choice(SHAPES)), colour, "extra", None, center, float(rng.uniform(-0.25, 0.25)))
    return replace(scene, things=scene.things + (extra,))


#: image degradations, applied to renders in this order
DEGRADE = {"blurry": blurry, "blotchy": blotchy, "low contrast": low_contrast, "watermark": watermark,
           "blocky": blocky}
#: scene degradations, applied to what is drawn before rendering
STAGE = {"cropped": cropped, "extra object": extra_object}


def drawn(scene: Scene, rng: np.random.Generator) -> Scene:
    """What is drawn for ``scene``: its things, changed by its scene degradations."""
    for name, change in STAGE.items():
        if name in scene.degradations:
            scene = change(scene, rng)
    return scene


def apply(images: torch.Tensor, degradations: list[tuple[str, ...]], generator: torch.Generator) -> torch.Tensor:
    """Degrade each image (B, 3, H, W) in [0, 1] by the image degradations of its tuple, batched by kind."""
    images = images.clone()
    for name, degrade in DEGRADE.items():
        index = torch.tensor([i for i, names in enumerate(degradations) if name in names], dtype=torch.long)
        if len(index):
            images[index] = degrade(images[index], generator)
    return images.clamp(0, 1)
