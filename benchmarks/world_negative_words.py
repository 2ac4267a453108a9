"""Why the handcrafted negative fails in the shapes world: each degradation word as the negative prompt alone.

64 ReNeg training prompts (not the benchmark), seed 0, the world's default guidance and steps; prints the ground
truth's adherence and cleanliness and the shapes-hps reward per negative.   python benchmarks/world_negative_words.py
"""

import torch

from reneg.generate import generate_images
from reneg.models.loading import encode_prompts, load_model
from reneg.rewards import build_reward
from reneg.world import path as world_path
from reneg.world.scenes import reneg_training_prompts
from reneg.world.truth import judge, load_truth
from reneg.world.vocab import DEGRADATIONS, HANDCRAFTED_NEGATIVE

NEGATIVES = ["", HANDCRAFTED_NEGATIVE, f"a {HANDCRAFTED_NEGATIVE} picture", *DEGRADATIONS, "a blurry picture"]


@torch.no_grad()
def main() -> None:
    model = load_model("shapes")
    truth, hps = load_truth(world_path("truth")), build_reward("shapes-hps")
    prompts = reneg_training_prompts()[:64]
    scale, steps = model.defaults.guidance_scale, model.defaults.num_inference_steps
    for negative in NEGATIVES:
        images = torch.cat(list(generate_images(
            model, prompts, encode_prompts(model.pipe, [negative])[0], guidance_scale=scale, steps=steps,
            resolution=64, generator=torch.Generator().manual_seed(0), batch_size=64)))
        verdict = judge(truth, images, prompts)
        print(f"{negative!r:62} adherence {verdict['adherence'].mean():.3f}  "
              f"cleanliness {verdict['cleanliness'].mean():.3f}  shapes-hps {hps(images, prompts).mean():.4f}")


if __name__ == "__main__":
    main()
