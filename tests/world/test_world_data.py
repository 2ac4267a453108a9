"""The shapes world's renderer, degradations, captions and prompt sets: ground truth that tests can check."""

import numpy as np
import pytest
import torch

from reneg.world import degrade
from reneg.world.data import render_scenes
from reneg.world.render import Scene, Thing, render
from reneg.world.scenes import benchmark_prompts, caption, parse_prompt, reneg_training_prompts, sample_scene
from reneg.world.truth import labels as truth_labels
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
    rng = np.random.default_rng(6)
    for _ in range(100):
        scene, category = sample_scene(rng, category="pair", degraded=False)
        a, b = scene.things
        assert a.size == b.size == "small" and abs(a.center[0] - b.center[0]) >= 0.4 - 1e-9  # never overlapping
        image = render(scene)
        for thing in scene.things:
            x, y = (round(c * 64 - 0.5) for c in thing.center)
            assert tuple(image[y, x]) == COLOURS[thing.colour] or thing.shape == "star"


def _batch():
    scene = Scene((Thing("cross", "orange", "large"),), "purple")
    return torch.from_numpy(render(scene)).permute(2, 0, 1).float()[None].repeat(4, 1, 1, 1) / 255


def test_degradations_do_what_they_say():
    images, generator = _batch(), torch.Generator().manual_seed(0)
    edges = lambda x: (x[..., 1:] - x[..., :-1]).pow(2).mean().item()  # noqa: E731  (gradient energy)
    assert edges(degrade.blurry(images, generator)) < 0.2 * edges(images)
    low = degrade.low_contrast(images, generator)
    assert low.std() < 0.45 * images.std() and abs(low.mean() - images.mean()) < 1e-5  # neither darker nor brighter
    blotches = degrade.blotchy(images, generator) - images
    amplitude, roughness = blotches.abs().mean(), (blotches[..., 1:] - blotches[..., :-1]).abs().mean()
    assert amplitude > 0.05 and roughness < 0.2 * amplitude  # strong but low-frequency: survives an 8x VAE
    stamped = degrade.watermark(images, generator)
    assert (stamped >= images - 1e-6).all() and (stamped - images).mean() > 0.03  # brighter bands, nothing darker
    assert (stamped - images)[..., 0, :, :].std() > 0.05  # a pattern, not a uniform lift
    blocks = degrade.blocky(torch.rand(2, 3, 64, 64, generator=generator), generator)
    within = blocks.unfold(2, 8, 8).unfold(3, 8, 8)  # (2, 3, 8, 8, 8, 8): every 8x8 block nearly flat
    assert within.std(dim=(-1, -2)).mean() < 0.25 * torch.rand(2, 3, 64, 64).std()
    assert degrade.apply(images, [(), ("blurry",), (), ()], generator)[0].equal(images[0])


def test_no_degradation_is_the_opposite_of_another():
    """v2 had "dark" and "washed out": steering away from one steered into the other. Mean brightness of each
    degradation on mid-grey scenes stays within 0.1 of the clean render (none is a photometric extreme)."""
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, degraded=False)[0] for _ in range(64)]
    clean = render_scenes(scenes, torch.Generator().manual_seed(0)).float() / 255
    for name in DEGRADATIONS:
        degraded = render_scenes([Scene(s.things, s.background, (name,)) for s in scenes],
                                 torch.Generator().manual_seed(0)).float() / 255
        assert abs(degraded.mean() - clean.mean()) < 0.1, name
        assert (degraded != clean).any(dim=(1, 2, 3)).float().mean() > 0.95, name  # every image changed


def _mask(image: np.ndarray, background: str) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(COLOURS[background])).sum(axis=-1) > 60


def test_cropped_cuts_the_first_object_by_a_border():
    rng = np.random.default_rng(4)
    for _ in range(50):
        scene = sample_scene(rng, degraded=False)[0]
        first = Scene(scene.things[:1], scene.background)
        moved = degrade.cropped(first, rng)
        inside = _mask(render(moved), scene.background).sum()
        whole = _mask(render(Scene((Thing(moved.things[0].shape, moved.things[0].colour, moved.things[0].size,
                                          None, (0.5, 0.5), moved.things[0].angle),), scene.background)),
                      scene.background).sum()
        assert 0.2 * whole < inside < 0.9 * whole  # cut, and still there
        labels = truth_labels(Scene(scene.things, scene.background, ("cropped",)))
        assert labels["degradations"][DEGRADATIONS.index("cropped")] == 1


def test_an_extra_object_is_small_unrequested_and_of_another_colour():
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = sample_scene(rng, degraded=False)[0]
        staged = degrade.extra_object(scene, rng)
        extra = staged.things[-1]
        assert staged.things[:-1] == scene.things and extra.size == "extra"
        assert extra.colour not in {scene.background, *(t.colour for t in scene.things)}
        image = render(staged)
        assert _mask(image, scene.background).sum() > _mask(render(scene), scene.background).sum()
        labels = truth_labels(Scene(scene.things, scene.background, ("extra object",)))
        assert labels["shapes"].sum() == len({t.shape for t in scene.things})  # the ground truth: requested only


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
