"""The world card's grid (docs/world-grid.png): renders of held-out scenes beside the world's generations.

Rows: renders, then generations for their captions with the null text, the handcrafted negative prompt and a
learned embedding.   python scripts/world_card.py runs/wt/quick/negative.safetensors docs/world-grid.png
"""

import sys

from reneg.embedding import NegativeEmbedding, null_text_embedding
from reneg.models.loading import encode_prompts, load_model
from reneg.world.card import card_grid


def main(embedding: str, out: str) -> None:
    model = load_model("shapes")
    negatives = {
        "null": null_text_embedding(model.pipe),
        "handcrafted": encode_prompts(model.pipe, [model.defaults.handcrafted_negative])[0],
        "learned": NegativeEmbedding.load(embedding).for_pipeline(model.pipe).tensor,
    }
    for number, prompt in enumerate(card_grid(out, negatives=negatives, model=model), 1):
        print(f"{number}. {prompt}")


if __name__ == "__main__":
    main(*sys.argv[1:])
