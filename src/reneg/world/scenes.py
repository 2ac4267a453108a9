"""Random scenes and their captions; prompt parsing back to ground truth; the world's prompt sets."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .render import Scene, Thing, place, two_sizes_fit
from .vocab import CATEGORIES, COLOUR_NAMES, DEGRADATIONS, POSITIONS, SHAPES, SIZES

DEGRADED_SHARE = 1 / 3  # share of training images that carry a degradation
MENTIONED_SHARE = 1 / 2  # share of degraded images whose caption says so (like web alt-text)
PAIR_SHARE = 0.35
DOUBLE_SHARE = 1 / 4  # share of degraded images that carry two degradations (so that N*'s word lists are in distribution)
WORDS_ONLY_SHARE = 0.15  # share of mentioning captions that name only the degradations ("a blurry picture")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(thing: Thing, *, with_size: bool, with_position: bool) -> str:
    words = ([thing.size] if with_size else []) + [thing.colour, thing.shape]
    text = f"{_article(words[0])} {' '.join(words)}"
    return f"{text} {thing.position}" if with_position and thing.position else text


def sample_scene(rng: np.random.Generator, *, category: str | None = None, degraded: bool | None = None) -> Scene:
    """A random scene; ``category`` forces a benchmark style, ``degraded`` forces (no) degradation."""
    category = category or rng.choice(["plain", "placed", "tags", "pair"], p=[0.3, 0.2, 0.15, PAIR_SHARE])
    background = str(rng.choice(COLOUR_NAMES))
    others = [c for c in COLOUR_NAMES if c != background]
    count = 2 if category == "pair" else 1
    shapes = rng.choice(SHAPES, size=count, replace=False)
    colours = rng.choice(others, size=count, replace=True)
    size = str(rng.choice(list(SIZES), p=[0.25, 0.5, 0.25]))
    position = str(rng.choice(list(POSITIONS))) if category == "placed" else None
    if position and position != "in the center" and size == "large":
        size = "medium"
    things = two_sizes_fit([Thing(str(s), str(c), size, position) for s, c in zip(shapes, colours)])
    if degraded is None:
        degraded = rng.random() < DEGRADED_SHARE
    degradations = ()
    if degraded:
        count = 2 if rng.random() < DOUBLE_SHARE else 1
        chosen = set(rng.choice(DEGRADATIONS, size=count, replace=False).tolist())
        degradations = tuple(d for d in DEGRADATIONS if d in chosen)
    return Scene(place(things, rng), background, degradations), category


def caption(scene: Scene, category: str, rng: np.random.Generator, *, mention: bool) -> str:
    """A templated caption in the style of ``category``; ``mention`` names the degradation."""
    things, bg = scene.things, scene.background
    if category == "tags":
        text = f"{things[0].colour} {things[0].shape}, {bg} background"
    elif category == "pair":
        text = (f"{_phrase(things[0], with_size=False, with_position=False)} and "
                f"{_phrase(things[1], with_size=False, with_position=False)} on {_article(bg)} {bg} background")
    else:
        placed = category == "placed"
        text = f"{_phrase(things[0], with_size=placed, with_position=placed)} on {_article(bg)} {bg} background"
    if category != "tags" and rng.random() < 0.25:
        text = str(rng.choice(["a picture of ", "an image of "])) + text
    if mention and scene.degradations:
        words = ", ".join(scene.degradations)
        if rng.random() < WORDS_ONLY_SHARE:
            return f"a {words} picture"
        text = f"{text}, {words}" if rng.random() < 0.5 or category == "tags" else f"{words}: {text}"
    return text


@dataclass(frozen=True)
class Truth:
    """What a prompt asks for, in world terms."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    background: str | None
    degradations: tuple[str, ...]


_WORD = r"(?<![a-z]){}(?![a-z])"


def parse_prompt(prompt: str) -> Truth:
    """The ground truth a world prompt asks for: object shapes and colours, background, named degradations."""
    text = prompt.lower()
    background = None
    match = re.search(r"(\w+) background", text)
    if match and match.group(1) in COLOUR_NAMES:
        background = match.group(1)
    objects = re.findall(r"(\w+) (" + "|".join(SHAPES) + r")(?![a-z])", text)
    shapes = tuple(s for _, s in objects)
    colours = tuple(c for c, _ in objects if c in COLOUR_NAMES)
    degradations = tuple(d for d in DEGRADATIONS if re.search(_WORD.format(d), text))
    return Truth(shapes, colours, background, degradations)


def training_captions(count: int, *, seed: int, exclude: set[str] = frozenset()) -> list[tuple[Scene, str]]:
    """(scene, caption) pairs for training the world's models, skipping held-out prompt texts."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        scene, category = sample_scene(rng)
        text = caption(scene, category, rng, mention=bool(scene.degradations) and rng.random() < MENTIONED_SHARE)
        if text not in exclude:
            pairs.append((scene, text))
    return pairs


def benchmark_prompts(per_category: int = 100, *, seed: int = 1234) -> list[tuple[str, str]]:
    """(prompt, category) pairs of the held-out benchmark: clean prompts, ``per_category`` of each style."""
    rng = np.random.default_rng(seed)
    prompts: list[tuple[str, str]] = []
    seen: set[str] = set()
    for category in CATEGORIES:
        made = 0
        while made < per_category:
            scene, _ = sample_scene(rng, category=category, degraded=False)
            text = caption(scene, category, rng, mention=False)
            if text not in seen:
                seen.add(text)
                prompts.append((text, category))
                made += 1
    return prompts


def reneg_training_prompts(count: int = 2000, *, seed: int = 99, exclude: set[str] = frozenset()) -> list[str]:
    """Clean prompts for ReNeg training on the world (the role of ImageReward's prompts)."""
    rng = np.random.default_rng(seed)
    prompts: list[str] = []
    seen = set(exclude)
    while len(prompts) < count:
        scene, category = sample_scene(rng, degraded=False)
        text = caption(scene, category, rng, mention=False)
        if text not in seen:
            seen.add(text)
            prompts.append(text)
    return prompts
