"""The shapes world's vocabulary: every word a caption may use, and the ground truth it stands for.

The world is built from the current vocabulary (:data:`V4`). What reads a *shipped* world (the ground-truth
scorer's verdicts, the captioner) takes the label names from the shipped scorer itself, so that a world built
from an older vocabulary (v3.1's :data:`V3`) keeps working until a new one ships.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocabulary:
    """The words of one world version and what they stand for."""

    version: str
    shapes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    #: flaws that captions may name (the handcrafted negative's words)
    defects: tuple[str, ...]
    #: flaws that the ground truth detects but no caption ever names (only a learned negative can target them)
    unnamed: tuple[str, ...] = ()

    @property
    def colour_names(self) -> tuple[str, ...]:
        return tuple(self.colours)

    @property
    def flaws(self) -> tuple[str, ...]:
        """Everything the ground truth's degradation head detects."""
        return self.defects + self.unnamed

    @property
    def handcrafted(self) -> str:
        """The world's handcrafted negative prompt (the role of N* in ReNeg Table 2): every defect word."""
        return ", ".join(self.defects)


SHAPES = ("circle", "square", "triangle", "star", "cross")

#: v3 / v3.1: tonal degradations (blur, blotches, contrast, blocks) and a palette with neighbours 30 degrees apart
V3 = Vocabulary("3", SHAPES, {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40),
    "orange": (245, 130, 30), "purple": (140, 50, 180), "white": (245, 245, 245), "black": (20, 20, 20),
}, ("blurry", "blotchy", "low contrast", "cropped", "watermark", "extra object", "blocky"))

#: v4: hues 60 degrees apart (no named colour has a neighbour that steering could slide it into), and defects
#: that leave the named attributes alone and have no opposite; "smudge" is tied to the low-quality tier and
#: never captioned. ("deformed", a wavy silhouette, was dropped at its gate: 0.588 AUC after the VAE, and a
#: stronger warp changes the shape itself; docs/world-v4.md)
V4 = Vocabulary("4", SHAPES, {
    "red": (225, 35, 35), "yellow": (235, 215, 35), "green": (35, 185, 55), "cyan": (35, 200, 215),
    "blue": (40, 65, 225), "magenta": (215, 45, 205), "white": (245, 245, 245), "black": (20, 20, 20),
}, ("watermark", "text", "frame", "extra object", "cropped"), ("smudge",))

#: what ``reneg world-build`` builds
CURRENT = V4
VOCABULARIES = {v.version: v for v in (V3, V4)}

COLOURS = CURRENT.colours
COLOUR_NAMES = CURRENT.colour_names
#: what the build's ground truth detects (defects, then unnamed flaws)
DEGRADATIONS = CURRENT.flaws
DEFECTS = CURRENT.defects
HANDCRAFTED_NEGATIVE = CURRENT.handcrafted
#: every colour and flaw word of every version, the current version's first and in its order: prompts are
#: parsed with these
ALL_COLOUR_NAMES = tuple(dict.fromkeys(c for v in (CURRENT, *VOCABULARIES.values()) for c in v.colour_names))
ALL_FLAWS = tuple(dict.fromkeys(f for v in (CURRENT, *VOCABULARIES.values()) for f in v.flaws))

#: radius as a share of the image side (v3: larger than v2's 0.16-0.32, which left a small star and a circle
#: less than one latent pixel apart)
SIZES = {"small": 0.2, "medium": 0.27, "large": 0.35}
#: radius of the unrequested object of the "extra object" defect (v4: 0.15, v3's 0.11 was barely learned)
EXTRA_RADIUS = 0.15
POSITIONS = {"in the center": (0.5, 0.5), "on the left": (0.3, 0.5), "on the right": (0.7, 0.5),
             "at the top": (0.5, 0.3), "at the bottom": (0.5, 0.7)}
#: The text encoder's context: the world's prompts are short (the longest caption is under 32 tokens)
TEXT_LENGTH = 32
#: The benchmark's four style categories (the role of HPSv2's anime / concept-art / paintings / photo).
CATEGORIES = ("plain", "placed", "pair", "tags")
