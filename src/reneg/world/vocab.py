"""The shapes world's vocabulary: every word a caption may use, and the ground truth it stands for."""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40),
    "orange": (245, 130, 30), "purple": (140, 50, 180), "white": (245, 245, 245), "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 0.16, "medium": 0.23, "large": 0.32}  # radius as a share of the image side
POSITIONS = {"in the center": (0.5, 0.5), "on the left": (0.3, 0.5), "on the right": (0.7, 0.5),
             "at the top": (0.5, 0.3), "at the bottom": (0.5, 0.7)}
#: Degradations, each at the latent's scale so that it survives an 8x VAE (see ``degrade.py``).
DEGRADATIONS = ("blurry", "blotchy", "low contrast", "washed out", "dark")
#: The world's handcrafted negative prompt (the role of N* in ReNeg Table 2).
HANDCRAFTED_NEGATIVE = "blurry, blotchy, low contrast, washed out, dark"
#: The benchmark's four style categories (the role of HPSv2's anime / concept-art / paintings / photo).
CATEGORIES = ("plain", "placed", "pair", "tags")
