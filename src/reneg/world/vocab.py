"""The shapes world's vocabulary: every word a caption may use, and the ground truth it stands for."""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40),
    "orange": (245, 130, 30), "purple": (140, 50, 180), "white": (245, 245, 245), "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
#: radius as a share of the image side. v3: larger than v2's (0.16, 0.23, 0.32): at 0.16 an object spans about
#: 2.5 pixels of the 8x8 latent, and a star and a circle differ by less than one
SIZES = {"small": 0.2, "medium": 0.27, "large": 0.35}
#: radius of the unrequested object of the "extra object" degradation: smaller than any requested size
EXTRA_RADIUS = 0.11
POSITIONS = {"in the center": (0.5, 0.5), "on the left": (0.3, 0.5), "on the right": (0.7, 0.5),
             "at the top": (0.5, 0.3), "at the bottom": (0.5, 0.7)}
#: Degradations, each at the latent's scale so that it survives an 8x VAE (see ``degrade.py``), modelled on what
#: SD's handcrafted N* names (blurry, low quality, jpeg artifacts, cropped, watermark, extra digits). None is the
#: opposite of another (v2 had "dark" and "washed out": steering away from one steered into the other).
DEGRADATIONS = ("blurry", "blotchy", "low contrast", "cropped", "watermark", "extra object", "blocky")
#: The world's handcrafted negative prompt (the role of N* in ReNeg Table 2).
HANDCRAFTED_NEGATIVE = ", ".join(DEGRADATIONS)
#: The text encoder's context: the world's prompts are short (the longest caption is under 30 tokens)
TEXT_LENGTH = 32
#: The benchmark's four style categories (the role of HPSv2's anime / concept-art / paintings / photo).
CATEGORIES = ("plain", "placed", "pair", "tags")
