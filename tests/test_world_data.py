"""The shapes world's renderer, degradations, captions and prompt sets: ground truth that tests can check."""

import numpy as np
import pytest
import torch

from reneg.world import degrade
from reneg.world.render import Scene, Thing, render
from reneg.world.scenes import benchmark_prompts, caption, parse_prompt, reneg_training_prompts, sample_scene
from reneg.world.vocab import CATEGORIES, COLOURS, DEGRADATIONS, SHAPES


def test_render_puts_the_object_colour_at_its_centre_and_the_background_elsewhere():
    scene = Scene((Thing("circle", "red", "large", center=(0.5, 0.5)),), "blue")
    image = render(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[32, 32]) == COLOURS["red"]
    assert tuple(image[2, 2]) == COLOURS["blue"]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_has_its_own_silhouette(shape):
    """Every shape covers its centre, and no two shapes have the same mask."""
    masks = {s: (render(Scene((Thing(s, "white", "large"),), "black"))[..., 0] > 128) for s in SHAPES}
    assert masks[shape][32, 32]
    for other in SHAPES:
        if other != shape:
            assert (masks[shape] != masks[other]).sum() > 40


def test_two_objects_are_side_by_side():
    scene = Scene((Thing("square", "yellow", center=(0.3, 0.5)), Thing("star", "green", center=(0.7, 0.5))), "white")
    image = render(scene)
    assert tuple(image[32, 19]) == COLOURS["yellow"] and tuple(image[32, 45]) == COLOURS["green"]


def _batch():
    scene = Scene((Thing("cross", "orange", "large"),), "purple")
    return torch.from_numpy(render(scene)).permute(2, 0, 1).float()[None].repeat(4, 1, 1, 1) / 255


def test_degradations_do_what_they_say():
    images, generator = _batch(), torch.Generator().manual_seed(0)
    edges = lambda x: (x[..., 1:] - x[..., :-1]).pow(2).mean().item()  # noqa: E731  (gradient energy)
    assert edges(degrade.blurry(images, generator)) < 0.2 * edges(images)
    assert degrade.dark(images, generator).mean() < 0.45 * images.mean()
    assert degrade.washed_out(images, generator).min() > 0.45
    assert degrade.low_contrast(images, generator).std() < 0.45 * images.std()
    blotches = degrade.blotchy(images, generator) - images
    amplitude, roughness = blotches.abs().mean(), (blotches[..., 1:] - blotches[..., :-1]).abs().mean()
    assert amplitude > 0.05 and roughness < 0.2 * amplitude  # strong but low-frequency: survives an 8x VAE
    assert degrade.apply(images, [(), ("dark",), (), ()], generator)[0].equal(images[0])


def test_captions_parse_back_to_their_scenes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene, category = sample_scene(rng)
        text = caption(scene, category, rng, mention=True)
        truth = parse_prompt(text)
        assert truth.degradations == scene.degradations
        if text.endswith(" picture"):  # names only the degradations, like some web alt-text
            assert not truth.shapes and truth.background is None
            continue
        assert sorted(truth.shapes) == sorted(t.shape for t in scene.things)
        assert sorted(truth.colours) == sorted(t.colour for t in scene.things)
        assert truth.background == scene.background


def test_degraded_share_and_mentions():
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng)[0] for _ in range(3000)]
    share = np.mean([bool(s.degradations) for s in scenes])
    assert 0.28 < share < 0.38
    assert {d for s in scenes for d in s.degradations} == set(DEGRADATIONS)
    doubles = np.mean([len(s.degradations) == 2 for s in scenes if s.degradations])
    assert 0.18 < doubles < 0.32


def test_benchmark_is_held_out_and_has_four_categories():
    benchmark = benchmark_prompts()
    assert len(benchmark) >= 400 and len({p for p, _ in benchmark}) == len(benchmark)
    assert sorted({c for _, c in benchmark}) == sorted(CATEGORIES)
    train = set(reneg_training_prompts(500, exclude={p for p, _ in benchmark}))
    assert not train & {p for p, _ in benchmark}
    assert all(not parse_prompt(p).degradations for p, _ in benchmark)
