"""Procedural scenes: one or two coloured shapes on a background, rendered at 64x64 with ground truth."""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field, replace

import numpy as np

from .vocab import COLOURS, EXTRA_RADIUS, POSITIONS, SIZES

RESOLUTION = 64
SUPERSAMPLE = 2
COLOUR_JITTER = 16.0


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str = "medium"
    position: str | None = None  # None: placed at random (or side by side for two objects)
    center: tuple[float, float] = (0.5, 0.5)
    angle: float = 0.0
    #: added to the palette colour (per channel, 0-255 scale): v4's colour jitter
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: str
    degradations: tuple[str, ...] = field(default_factory=tuple)
    background_tint: tuple[float, float, float] = (0.0, 0.0, 0.0)


@lru_cache(maxsize=2)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    coords = ((np.arange(n) + 0.5) / n).astype(np.float32)
    return np.meshgrid(coords, coords)  # x, y in [0, 1]


def _mask(thing: Thing, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape on the supersampled grid."""
    r = SIZES.get(thing.size, EXTRA_RADIUS)  # size "extra": the unrequested object of a degradation
    cx, cy = thing.center
    c, s = math.cos(thing.angle), math.sin(thing.angle)
    dx, dy = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    if thing.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if thing.shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= r * 0.85
    if thing.shape == "cross":
        arm = r * 0.33
        return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))
    if thing.shape == "triangle":  # upward, centred on its centroid
        h = 1.5 * r
        top, base = -r, h - r
        inside = (dy <= base) & (dy >= top)
        half_width = (dy - top) / h * (h / math.sqrt(3))
        return inside & (abs(dx) <= half_width)
    if thing.shape == "star":  # five points, inner radius 0.45 r
        theta = np.arctan2(dx, -dy)
        k = (theta % (2 * math.pi / 5)) / (2 * math.pi / 5)
        tri = np.abs(k - 0.5) * 2  # 1 at the points, 0 between them
        radius = r * (0.45 + 0.55 * tri**1.5)
        return np.sqrt(dx**2 + dy**2) <= radius
    raise ValueError(f"unknown shape {thing.shape}")


def _colour(name: str, tint: tuple[float, float, float]) -> np.ndarray:
    return np.clip(np.asarray(COLOURS[name], np.float32) + np.asarray(tint, np.float32), 0, 255)


def render(scene: Scene) -> np.ndarray:
    """The clean render of ``scene`` (degradations are applied separately), uint8 (64, 64, 3)."""
    n = RESOLUTION * SUPERSAMPLE
    x, y = _grid(n)
    image = np.empty((n, n, 3), np.float32)
    image[:] = _colour(scene.background, scene.background_tint)
    for thing in scene.things:
        image[_mask(thing, x, y)] = _colour(thing.colour, thing.tint)
    image = image.reshape(RESOLUTION, SUPERSAMPLE, RESOLUTION, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return image.round().astype(np.uint8)


def place(things: list[Thing], rng: np.random.Generator) -> tuple[Thing, ...]:
    """Give each thing a centre (its named position, or a random one that keeps two things apart) and an angle."""
    placed = []
    for index, thing in enumerate(things):
        if thing.position is not None:
            base = POSITIONS[thing.position]
        elif len(things) == 2:
            base = (0.27, 0.5) if index == 0 else (0.73, 0.5)
        else:
            base = (0.5, 0.5)
        jitter = 0.03 if len(things) == 2 else 0.04 if thing.position else 0.1
        center = tuple(float(np.clip(b + rng.uniform(-jitter, jitter), 0.2, 0.8)) for b in base)
        angle = float(rng.uniform(-0.25, 0.25)) if thing.shape != "circle" else 0.0
        placed.append(replace(thing, center=center, angle=angle, tint=jitter_tint(rng)))
    return tuple(placed)


def two_sizes_fit(things: list[Thing]) -> list[Thing]:
    """Two objects side by side are small, so that they never overlap (their centres stay 0.4 apart)."""
    if len(things) < 2:
        return things
    return [replace(t, size="small") for t in things]


def jitter_tint(rng: np.random.Generator) -> tuple[float, float, float]:
    """v4's colour jitter: a brightness shift of +-COLOUR_JITTER plus a per-channel one of half that, so that a
    named colour is a neighbourhood of its palette entry (the palette's hues are 60 degrees apart)."""
    shift = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER)
    return tuple(float(round(shift + rng.uniform(-COLOUR_JITTER / 2, COLOUR_JITTER / 2), 1)) for _ in range(3))

