"""A procedural judge of generated images: shapes read by template matching, no trained model.

The world's ground-truth scorer is a trained CNN; to tune the world's own
training (a new geometry, a new recipe) before that scorer exists, and to check
the scorer, this judge reads a clean image directly: the background is the
palette colour of the border, each object is the set of pixels far from it, its
colour the palette colour of their median, and its shape the one whose
silhouette, scaled to the same area and centred on the same centroid, overlaps
it best (IoU over a few angles). Pairs are split at the image's middle column.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .render import Thing, _grid, _mask
from .scenes import parse_prompt
from .vocab import COLOUR_NAMES, COLOURS, EXTRA_RADIUS, SHAPES

_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)
_ANGLES = (-0.2, -0.1, 0.0, 0.1, 0.2)


def _nearest_colour(rgb: np.ndarray) -> str:
    return COLOUR_NAMES[int(np.abs(_PALETTE - rgb).sum(axis=1).argmin())]


@lru_cache(maxsize=None)
def _unit_area(shape: str) -> float:
    """Area of ``shape`` at radius 1, as a share of the unit square (from a fine render at radius 0.25)."""
    x, y = _grid(512)
    return float(_mask(Thing(shape, "white", "extra", None, (0.5, 0.5)), x, y).mean()) / EXTRA_RADIUS**2


def _silhouette(shape: str, center: tuple[float, float], area: float, angle: float) -> np.ndarray:
    """Boolean 64x64 mask of ``shape`` with the given pixel area, centred at ``center`` (in [0, 1])."""
    radius = math.sqrt(area / 64**2 / _unit_area(shape))
    x, y = _grid(64)
    scaled = Thing(shape, "white", "extra", None, (0.5, 0.5), angle)
    # _mask draws at EXTRA_RADIUS: map the grid so that EXTRA_RADIUS becomes ``radius``
    factor = EXTRA_RADIUS / radius
    return _mask(scaled, 0.5 + (x - center[0]) * factor, 0.5 + (y - center[1]) * factor)


def _read_object(image: np.ndarray, far: np.ndarray, background: np.ndarray) -> tuple[str, str] | None:
    """(shape, colour) of the object whose pixels are far from the background; None where there is none.

    The silhouette is every pixel of the region nearer the object's colour than the background's (a blurred
    edge is split at its midpoint, as the render's own anti-aliasing is)."""
    if int(far.sum()) < 12:
        return None
    pixels = image.astype(np.float32)
    median = np.median(pixels[far], axis=0)
    colour = _nearest_colour(median)
    mask = (np.abs(pixels - median).sum(axis=-1) < np.abs(pixels - background).sum(axis=-1)) & far.any()
    mask &= _region(far)
    area = int(mask.sum())
    if area < 12:
        return None
    ys, xs = np.nonzero(mask)
    center = ((xs.mean() + 0.5) / 64, (ys.mean() + 0.5) / 64)
    best = max(((float((m & mask).sum() / (m | mask).sum()), shape) for shape in SHAPES for angle in _ANGLES
                for m in [_silhouette(shape, center, area, angle)]))
    return best[1], colour


def read_image(image: np.ndarray, objects: int) -> tuple[str, list[tuple[str, str]]]:
    """(background, [(shape, colour), ...]) of a uint8 (64, 64, 3) image with 1 or 2 objects."""
    # a ring 9 px inside the border: v4's "frame" and "text" defects cover the outermost pixels
    ring = 9
    border = np.concatenate([image[ring], image[-ring - 1], image[:, ring], image[:, -ring - 1]]).astype(np.float32)
    seen = np.median(border, axis=0)
    background = _nearest_colour(seen)
    far = np.abs(image.astype(np.float32) - seen).sum(axis=-1) > 90
    if objects == 1:
        halves = [far]
    else:
        left = np.zeros_like(far)
        left[:, :32] = True
        halves = [far & left, far & ~left]
    return background, [o for o in (_read_object(image, m, seen) for m in halves) if o is not None]


def _region(far: np.ndarray) -> np.ndarray:
    """The bounding box of ``far``, grown by 3 px: where the object's silhouette may lie."""
    ys, xs = np.nonzero(far)
    box = np.zeros_like(far)
    box[max(ys.min() - 3, 0):ys.max() + 4, max(xs.min() - 3, 0):xs.max() + 4] = True
    return box


def judge_images(images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """Share of images whose shape(s), colour(s) and background match the prompt: uint8 (N, 64, 64, 3)."""
    right = {"shape": [], "colour": [], "background": []}
    for image, prompt in zip(images, prompts):
        truth = parse_prompt(prompt)
        background, found = read_image(image, len(truth.shapes) or 1)
        right["background"].append(background == truth.background)
        right["shape"].append(sorted(s for s, _ in found) == sorted(truth.shapes))
        right["colour"].append(sorted(c for _, c in found) == sorted(truth.colours))
    return {k: float(np.mean(v)) for k, v in right.items()}


def judge_pipeline(pipe, prompts: list[str], *, guidance_scale: float = 3.0, steps: int = 20,
                   batch_size: int = 40) -> dict[str, float]:
    """Generate ``prompts`` with ``pipe`` (null text, DDIM, 64 px; batch k's x_T from seed k * batch_size) and
    judge them with :func:`judge_images`: how the world's short runs and a running build are read."""
    import torch

    from ..core.rollout import guided_images
    from ..families import family_for

    family = family_for(pipe)
    family.use_sampler()
    images = []
    for at in range(0, len(prompts), batch_size):
        part = prompts[at:at + batch_size]
        latents = family.initial_latents(len(part), resolution=64, generator=torch.Generator().manual_seed(at))
        made = guided_images(family, part, family.null_text(), latents, guidance_scale=guidance_scale, steps=steps,
                             resolution=64)
        images.append((made.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return judge_images(np.concatenate(images), prompts)
