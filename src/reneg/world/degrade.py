"""Defects at the latent's scale: each one survives an 8x VAE (a pixel-level one would not).

v4's defects leave the named attributes (shapes, colours, background) alone and have no opposite to
over-steer into (v3's tonal ones, blurry and low contrast, drifted hues when steered away from). Two kinds:

- image defects take a batch (B, 3, H, W) in [0, 1] and draw their per-image strengths from a torch
  ``generator``: watermark (coarse diagonal stripes), text (a caption bar along an edge), frame (a thin neutral
  border), and smudge (soft grey blobs on the background: the unnamed flaw of the low-quality tier, which no
  caption mentions); none of them covers the objects (v4 gate run 4);
- scene defects change what is drawn, from a numpy ``rng``: cropped (the first object cut by the border),
  extra object (an unrequested shape in the emptiest corner). The scene's own ``things`` stay the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .render import Scene, Thing, jitter_tint
from .vocab import COLOUR_NAMES, EXTRA_RADIUS, SHAPES, SIZES


def _uniform(batch: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return (low + (high - low) * torch.rand(batch, generator=generator)).view(-1, 1, 1, 1)


def watermark(images: torch.Tensor, generator: torch.Generator, *, period: float = 32,
              diagonal: bool = True) -> torch.Tensor:
    """A stamped stripe pattern: white diagonal bands (period 32 px, one way or the other) at 35-50% opacity.

    v3's bands (period 16, 30-45%) kept a third of their energy through the VAE and the ground truth found them
    at AUC 0.713; bands twice as coarse are found at 0.909 by a linear detector (docs/world.md). ``period`` and
    ``diagonal=False`` (bands along one axis) draw other designs for measurements.
    """
    b, _, h, w = images.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    direction = torch.where(torch.rand(b, generator=generator) < 0.5, 1.0, -1.0).view(-1, 1, 1)
    phase = torch.rand(b, generator=generator).view(-1, 1, 1) * 2 * math.pi
    coordinate = x + direction * y if diagonal else torch.where(direction > 0, x, y)
    bands = (torch.cos(2 * math.pi * coordinate / period + phase).clamp(min=0) ** 2).unsqueeze(1)
    opacity = _uniform(b, 0.35, 0.5, generator)
    return images * (1 - opacity * bands) + opacity * bands


def text(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A caption bar stamped along the top or bottom edge: a dark band 7-8 px high with a row of light glyph
    blocks (v4 gate run 4: thinner than the 10-12 px of the gate runs before, so that it covers the edge of the
    scene and not the objects, whose centres stay within the middle 60%)."""
    b, _, h, w = images.shape
    out = images.clone()
    for i in range(b):
        height = int(torch.randint(7, 9, (1,), generator=generator))
        top = 0 if torch.rand((), generator=generator) < 0.5 else h - height
        band = out[i, :, top:top + height]
        out[i, :, top:top + height] = band * 0.2 + 0.08
        glyphs = torch.rand(w // 4, generator=generator) < 0.6  # one glyph block per 4 columns, 3 px wide
        for g in torch.nonzero(glyphs).flatten().tolist():
            out[i, :, top + 2:top + height - 2, 4 * g:4 * g + 3] = 0.9
    return out


#: neutral frame colours, none in the palette (grey, brown, beige)
FRAME_COLOURS = ((0.5, 0.5, 0.5), (0.55, 0.4, 0.25), (0.82, 0.75, 0.6))


def frame(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A border 3-4 px wide on all four sides, in a neutral colour outside the palette (v4 gate run 4: thinner
    than 5-7 px, so that it hides less of the background a caption names)."""
    b, _, h, w = images.shape
    out = images.clone()
    for i in range(b):
        width = int(torch.randint(3, 5, (1,), generator=generator))
        colour = torch.tensor(FRAME_COLOURS[int(torch.randint(len(FRAME_COLOURS), (1,), generator=generator))])
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[width:h - width, width:w - width] = True
        out[i] = torch.where(inside, out[i], colour.view(3, 1, 1))
    return out


def smudge(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Soft grey smudges (never named by a caption): 2-4 Gaussian blobs, sigma 5-8 px, 50-70% towards a grey,
    centred in the outer fifth of the image (v4 gate run 4: on the background, off the objects, whose centres
    stay within the middle 60%; the gate runs before put them over the objects)."""
    b, _, h, w = images.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out = images.clone()
    for i in range(b):
        for _ in range(int(torch.randint(2, 5, (1,), generator=generator))):
            along, across = torch.rand(2, generator=generator).tolist()
            edge = 0.2 * across if torch.rand((), generator=generator) < 0.5 else 1 - 0.2 * across
            cx, cy = (edge, along) if torch.rand((), generator=generator) < 0.5 else (along, edge)
            cx, cy = cx * w, cy * h
            sigma = 5 + 3 * float(torch.rand((), generator=generator))
            strength = 0.5 + 0.2 * float(torch.rand((), generator=generator))
            grey = 0.3 + 0.4 * float(torch.rand((), generator=generator))
            alpha = strength * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
            out[i] = out[i] * (1 - alpha) + grey * alpha
    return out


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
    """An unrequested shape (radius ``EXTRA_RADIUS``) of another colour in the corner farthest from the objects."""
    corners = [(0.17, 0.17), (0.83, 0.17), (0.17, 0.83), (0.83, 0.83)]
    distance = [min(math.dist(c, t.center) for t in scene.things) for c in corners]
    center = corners[int(np.argmax(distance))]
    taken = {scene.background, *(t.colour for t in scene.things)}
    colour = str(rng.choice([c for c in COLOUR_NAMES if c not in taken]))
    extra = Thing(str(rng.choice(SHAPES)), colour, "extra", None, center, float(rng.uniform(-0.25, 0.25)),
                  jitter_tint(rng))
    return replace(scene, things=scene.things + (extra,))


#: image degradations, applied to renders in this order
DEGRADE = {"smudge": smudge, "watermark": watermark, "frame": frame, "text": text}
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
