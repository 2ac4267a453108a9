"""The shapes world's renderer, degradations, captions and prompt sets: ground truth that tests can check."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from reneg import world
from reneg.world import degrade
from reneg.world.data import render_scenes
from reneg.world.render import Scene, Thing, render
from reneg.world.truth import labels as truth_labels
from reneg.world.scenes import (benchmark_prompts, caption, parse_prompt, reneg_training_prompts, sample_scene, tier,
                                training_captions)
from reneg.world.vocab import CATEGORIES, COLOURS, DEFECTS, DEGRADATIONS, EXTRA_RADIUS, SHAPES, SIZES


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
            seen = image[y, x].astype(int) - np.array(COLOURS[thing.colour])
            assert np.abs(seen).max() <= 25 or thing.shape == "star"  # its colour, jittered


def _batch():
    scene = Scene((Thing("cross", "magenta", "large"),), "cyan")
    return torch.from_numpy(render(scene)).permute(2, 0, 1).float()[None].repeat(4, 1, 1, 1) / 255


def test_image_defects_do_what_they_say():
    images, generator = _batch(), torch.Generator().manual_seed(0)
    stamped = degrade.watermark(images, generator)
    assert (stamped >= images - 1e-6).all() and (stamped - images).mean() > 0.03  # brighter bands, nothing darker
    assert (stamped - images)[..., 0, :, :].std() > 0.05  # a pattern, not a uniform lift
    framed = degrade.frame(images, generator)
    assert framed[..., 20:44, 20:44].equal(images[..., 20:44, 20:44])  # the middle untouched
    border = framed[..., :3, :].reshape(4, 3, -1)
    assert (border.std(dim=-1) < 1e-6).all() and not framed[..., :3, :].equal(images[..., :3, :])
    assert framed[..., 5:59, 5:59].equal(images[..., 5:59, 5:59])  # 3-4 px: off the objects
    texted = degrade.text(images, generator)
    changed_rows = (texted != images).any(dim=1).any(dim=-1)  # (4, 64): rows the bar covers
    assert ((changed_rows.sum(dim=1) >= 7) & (changed_rows.sum(dim=1) <= 8)).all()
    assert (changed_rows[:, :7].all(dim=1) | changed_rows[:, -7:].all(dim=1)).all()  # along the top or bottom
    smudged = degrade.smudge(images, generator) - images
    amplitude, roughness = smudged.abs().mean(), (smudged[..., 1:] - smudged[..., :-1]).abs().mean()
    assert amplitude > 0.02 and roughness < 0.2 * amplitude  # soft, low-frequency: survives an 8x VAE
    middle, ring = smudged[..., 20:44, 20:44].abs().mean(), smudged.abs().mean()
    assert middle < 0.5 * ring  # on the background: the objects' middle barely touched
    assert degrade.apply(images, [(), ("frame",), (), ()], generator)[0].equal(images[0])


def test_no_flaw_is_a_photometric_extreme():
    """v2 had "dark" and "washed out": steering away from one steered into the other, and v3's tonal flaws
    (blurry, low contrast) drifted hues when steered away from. Each v4 flaw keeps the mean brightness within 0.1
    of the clean render, and changes every image."""
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, degraded=False)[0] for _ in range(64)]
    clean = render_scenes(scenes, torch.Generator().manual_seed(0)).float() / 255
    for name in DEGRADATIONS:
        degraded = render_scenes([Scene(s.things, s.background, (name,), s.background_tint) for s in scenes],
                                 torch.Generator().manual_seed(0)).float() / 255
        assert abs(degraded.mean() - clean.mean()) < 0.1, name
        assert (degraded != clean).any(dim=(1, 2, 3)).float().mean() > 0.95, name  # every image changed


def _mask(image: np.ndarray, scene: Scene) -> np.ndarray:
    background = np.array(COLOURS[scene.background]) + np.array(scene.background_tint)
    return np.abs(image.astype(int) - background).sum(axis=-1) > 60


def test_cropped_cuts_the_first_object_by_a_border():
    rng = np.random.default_rng(4)
    for _ in range(50):
        scene = sample_scene(rng, degraded=False)[0]
        first = Scene(scene.things[:1], scene.background, (), scene.background_tint)
        moved = degrade.cropped(first, rng)
        inside = _mask(render(moved), scene).sum()
        whole = _mask(render(replace(moved, things=(replace(moved.things[0], center=(0.5, 0.5)),))), scene).sum()
        assert 0.2 * whole < inside < 0.9 * whole  # cut, and still there
        labels = truth_labels(Scene(scene.things, scene.background, ("cropped",)))
        assert labels["degradations"][DEGRADATIONS.index("cropped")] == 1


def test_an_extra_object_is_smaller_unrequested_and_of_another_colour():
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = sample_scene(rng, degraded=False)[0]
        staged = degrade.extra_object(scene, rng)
        extra = staged.things[-1]
        assert staged.things[:-1] == scene.things and extra.size == "extra"
        assert extra.colour not in {scene.background, *(t.colour for t in scene.things)}
        assert EXTRA_RADIUS < min(SIZES.values())
        image = render(staged)
        assert _mask(image, scene).sum() > _mask(render(scene), scene).sum()
        labels = truth_labels(Scene(scene.things, scene.background, ("extra object",)))
        assert labels["shapes"].sum() == len({t.shape for t in scene.things})  # the ground truth: requested only


def test_clean_captions_parse_back_to_their_scenes_and_never_name_the_smudge():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene, category = sample_scene(rng)
        text = caption(scene, category, rng, mention=True)
        truth = parse_prompt(text)
        assert truth.degradations == tuple(d for d in scene.degradations if d in DEFECTS)
        assert "smudge" not in text
        if text.endswith(" picture"):  # names only the defects, like some web alt-text
            assert not truth.shapes and truth.background is None
            continue
        assert sorted(truth.shapes) == sorted(t.shape for t in scene.things)
        assert sorted(truth.colours) == sorted(t.colour for t in scene.things)
        assert truth.background == scene.background


def test_noisy_captions_are_wrong_or_silent_as_declared():
    """Alt-text noise: a single object's shape is wrong about 25% and left out about 15% of the time."""
    rng = np.random.default_rng(2)
    said = {"right": 0, "wrong": 0, "omitted": 0}
    for _ in range(3000):
        scene, category = sample_scene(rng, category="plain", degraded=False)
        words = caption(scene, category, rng, mention=False, noisy=True).split()
        shape = next((w for w in words if w in SHAPES or w == "shape"), None)
        said["omitted" if shape == "shape" else "right" if shape == scene.things[0].shape else "wrong"] += 1
    assert abs(said["wrong"] / 3000 - 0.25) < 0.03 and abs(said["omitted"] / 3000 - 0.15) < 0.03


def test_quality_tiers_and_mentions():
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng)[0] for _ in range(3000)]
    assert 0.70 < np.mean([bool(s.degradations) for s in scenes]) < 0.80  # three in four since gate run 3
    assert {d for s in scenes for d in s.degradations} == set(DEGRADATIONS)
    low = [s for s in scenes if tier(s) == "low"]
    assert 0.31 < len(low) / len(scenes) < 0.39 and all("smudge" in s.degradations for s in low)
    assert all(sum(d in DEFECTS for d in s.degradations) <= 5 for s in scenes)
    pairs = training_captions(3000, seed=4)
    degraded = [t for s, t in pairs if any(d in DEFECTS for d in s.degradations)]
    mentioned = np.mean([bool(parse_prompt(t).degradations) for t in degraded])
    assert 0.09 < mentioned < 0.16


def test_benchmark_is_held_out_and_has_four_categories():
    benchmark = benchmark_prompts()
    assert len(benchmark) >= 400 and len({p for p, _ in benchmark}) == len(benchmark)
    assert sorted({c for _, c in benchmark}) == sorted(CATEGORIES)
    train = set(reneg_training_prompts(500, exclude={p for p, _ in benchmark}))
    assert not train & {p for p, _ in benchmark}
    assert all(not parse_prompt(p).degradations for p, _ in benchmark)


def test_every_tier_opens_with_a_prefix_equally_often_and_the_low_tier_with_its_own():
    """A prompt without a prefix is no evidence of a tier (CFG would raise it to the power g: gate G4)."""
    from reneg.world.scenes import PREFIXES, tier, training_captions

    shares = {name: share for name, (share, _) in PREFIXES.items()}
    assert len(set(shares.values())) == 1
    low = PREFIXES["low"][1]
    assert not set(low) & {p for name, (_, words) in PREFIXES.items() if name != "low" for p in words}
    seen = {}
    for scene, text in training_captions(3000, seed=5):
        if text.startswith(low):
            seen.setdefault(tier(scene), 0)
            seen[tier(scene)] += 1
    assert set(seen) == {"low"}


def test_the_100_prompt_subset_is_every_fourth_prompt_of_the_shipped_benchmark():
    """benchmarks/world_heldout_100.json (per-sample, NPO heat map and benchmark runs) follows the shipped world:
    a subset written for an older vocabulary would ask for colours the world cannot draw."""
    if not world.is_built():
        pytest.skip("no shipped world")
    subset = json.loads((Path(__file__).parents[2] / "benchmarks" / "world_heldout_100.json").read_text())
    shipped = json.loads((world.path("prompts") / "benchmark.json").read_text())
    assert subset == shipped[::4]
