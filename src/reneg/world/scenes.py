"""Random scenes and their captions; prompt parsing back to ground truth; the world's prompt sets."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from .render import Scene, Thing, jitter_tint, place, two_sizes_fit
from .vocab import (ALL_COLOUR_NAMES, ALL_FLAWS, CATEGORIES, COLOUR_NAMES, CURRENT, DEFECTS, DEGRADATIONS, POSITIONS,
                    SHAPES, SIZES)

UNNAMED = CURRENT.unnamed

PAIR_SHARE = 0.35
#: quality tiers of the training images (v4): share, number of named defects (with its probabilities), and the
#: chance of the unnamed "smudge". Three images in four are degraded, a third heavily, as in web data: a flaw
#: on a minority of the images is what CFG's mode seeking removes by itself (v4 gate run 2: each defect on a
#: fifth of the images, 45% of null images flagged at guidance 1 and 8% at 7.5).
TIERS = {
    "high": (0.25, {0: 1.0}, 0.0),
    "medium": (0.4, {1: 0.6, 2: 0.4}, 0.25),
    "low": (0.35, {3: 0.5, 4: 0.35, 5: 0.15}, 1.0),
}
#: share of degraded images whose caption names its defects (like web alt-text, rarely; v3: one half)
MENTIONED_SHARE = 1 / 8
#: share of mentioning captions that name only the defects ("a watermark, cropped picture")
WORDS_ONLY_SHARE = 0.3
#: caption noise (v4): each named attribute of a training caption is wrong this often, and left out this often
WRONG_SHARE, OMITTED_SHARE = 0.25, 0.15
#: caption style by tier: how often a caption opens with a prefix, and which. The low tier's prefixes are its
#: own (a learned negative may find that direction, a handcrafted one cannot name it), but every tier opens
#: with one equally often: a prompt without a prefix is then no evidence of a tier, which CFG would raise to
#: the power of the guidance scale (the v4 gate run's 60% low vs 25% removed the low tier at 7.5: G4)
PREFIXES = {"high": (0.25, ("a picture of ", "an image of ")), "medium": (0.25, ("a picture of ", "an image of ")),
            "low": (0.25, ("pic of ", "img of ", "a pic of "))}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(shape: str | None, colour: str | None, thing: Thing, *, with_size: bool, with_position: bool) -> str:
    words = ([thing.size] if with_size else []) + ([colour] if colour else []) + [shape or "shape"]
    text = f"{_article(words[0])} {' '.join(words)}"
    return f"{text} {thing.position}" if with_position and thing.position else text


def sample_scene(rng: np.random.Generator, *, category: str | None = None, degraded: bool | None = None) -> Scene:
    """A random scene and its style; ``category`` forces a benchmark style, ``degraded`` forces (no) defects.

    The quality tier is drawn from :data:`TIERS` (``degraded=True`` draws among the degraded tiers);
    ``scene.degradations`` lists its flaws in vocabulary order."""
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
    flaws = _draw_flaws(rng, degraded)
    return Scene(place(things, rng), background, flaws, jitter_tint(rng)), category


def _draw_flaws(rng: np.random.Generator, degraded: bool | None) -> tuple[str, ...]:
    names = list(TIERS)
    shares = np.array([TIERS[t][0] for t in names])
    if degraded is False:
        return ()
    if degraded:
        shares[names.index("high")] = 0
    tier = names[int(rng.choice(len(names), p=shares / shares.sum()))]
    _, counts, smudge_share = TIERS[tier]
    count = int(rng.choice(list(counts), p=list(counts.values())))
    chosen = set(rng.choice(DEFECTS, size=count, replace=False).tolist()) if count else set()
    if rng.random() < smudge_share:
        chosen |= set(UNNAMED)
    return tuple(d for d in DEGRADATIONS if d in chosen)


def tier(scene: Scene) -> str:
    """The quality tier a scene's flaws belong to (by its number of named defects)."""
    count = sum(d in DEFECTS for d in scene.degradations)
    return "high" if count == 0 and not scene.degradations else "medium" if count <= 2 else "low"


def _noisy(value: str, options: list[str], rng: np.random.Generator, noisy: bool) -> str | None:
    """``value`` as an alt-text caption gives it: wrong (another option), left out (None), or right."""
    if not noisy:
        return value
    draw = rng.random()
    if draw < WRONG_SHARE:
        return str(rng.choice([o for o in options if o != value]))
    return None if draw < WRONG_SHARE + OMITTED_SHARE else value


def caption(scene: Scene, category: str, rng: np.random.Generator, *, mention: bool, noisy: bool = False) -> str:
    """A templated caption in the style of ``category``; ``mention`` names the scene's defects (never "smudge").

    ``noisy`` makes it web alt-text (v4): each named attribute (each object's shape and colour, the background)
    is wrong with probability ``WRONG_SHARE`` and left out with ``OMITTED_SHARE``. Benchmark prompts are clean
    and complete."""
    things = scene.things[:2 if category == "pair" else 1]
    named = [(_noisy(t.shape, list(SHAPES), rng, noisy), _noisy(t.colour, list(COLOUR_NAMES), rng, noisy))
             for t in things]
    bg = _noisy(scene.background, list(COLOUR_NAMES), rng, noisy)
    on_bg = f" on {_article(bg)} {bg} background" if bg else ""
    if category == "tags":
        shape, colour = named[0]
        text = f"{colour + ' ' if colour else ''}{shape or 'shape'}" + (f", {bg} background" if bg else "")
    elif category == "pair":
        text = " and ".join(_phrase(s, c, t, with_size=False, with_position=False)
                            for (s, c), t in zip(named, things)) + on_bg
    else:
        placed = category == "placed"
        text = _phrase(*named[0], things[0], with_size=placed, with_position=placed) + on_bg
    share, prefixes = PREFIXES[tier(scene)]
    if category != "tags" and rng.random() < share:
        text = str(rng.choice(prefixes)) + text
    defects = [d for d in scene.degradations if d in DEFECTS]
    if mention and defects:
        words = ", ".join(defects)
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
    if match and match.group(1) in ALL_COLOUR_NAMES:
        background = match.group(1)
    objects = re.findall(r"(\w+) (" + "|".join(SHAPES) + r")(?![a-z])", text)
    shapes = tuple(s for _, s in objects)
    colours = tuple(c for c, _ in objects if c in ALL_COLOUR_NAMES)
    degradations = tuple(d for d in ALL_FLAWS if re.search(_WORD.format(d), text))
    return Truth(shapes, colours, background, degradations)


def true_caption(scene: Scene, rng: np.random.Generator) -> str:
    """The complete, correct caption of a training scene (what a curated preference dataset would say of it):
    its objects, colours and background as rendered, and its named defects (v4 gate run 4; never the unnamed
    smudge), with no tier's prefix."""
    category = "pair" if len(scene.things) > 1 else "placed" if scene.things[0].position else "plain"
    text = caption(replace(scene, degradations=()), category, rng, mention=False)
    defects = [d for d in scene.degradations if d in DEFECTS]
    return f"{text}, {', '.join(defects)}" if defects else text


def training_captions(count: int, *, seed: int, exclude: set[str] = frozenset()) -> list[tuple[Scene, str]]:
    """(scene, caption) pairs for training the world's models (noisy alt-text), skipping held-out prompt texts."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        scene, category = sample_scene(rng)
        mention = bool(scene.degradations) and rng.random() < MENTIONED_SHARE
        text = caption(scene, category, rng, mention=mention, noisy=True)
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
