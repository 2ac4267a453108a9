"""Rewards: registry, torch preprocessing against the CLIPProcessor reference, gradients, simple rewards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from reneg.errors import ReNegError
from reneg.models.tiny import tiny_clip
from reneg.rewards import Reward, available_rewards, build_reward, combine, register_reward
from reneg.rewards.clip import PICKSCORE_PROCESSOR, projected_features, shortest_edge_size

#: PIL sizes (width, height): upscaled square, landscape and portrait, downscaled odd-sized landscape.
PIL_SIZES = [(64, 64), (300, 200), (200, 300), (513, 250)]
PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dusk", "a cat", "two dogs on a red sofa"]
#: Maximum relative score difference between the torch path and the CLIPProcessor reference.
REL_TOL = 1e-3
BUILTINS = {"pickscore", "clip-score", "contrast", "saturation", "random-linear"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """tiny_clip() (real 224-pixel input, so resize and crop run) saved as a local model directory."""
    model, processor = tiny_clip()
    directory = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def reference(clip_dir):
    """The reference path's model and processor, loaded independently of the reward."""
    return CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval(), CLIPProcessor.from_pretrained(clip_dir)


def random_pil(width: int, height: int, seed: int) -> Image.Image:
    """Uniform-noise RGB content, the hardest case for resampling agreement."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


@torch.no_grad()
def reference_score(model, processor, image: Image.Image, prompt: str, *, scale: float | None) -> float:
    """PickScore's reference ``calc_probs``: processor on PIL -> features -> normalise -> scale * cos."""
    image_inputs = processor(images=image, return_tensors="pt")
    text_inputs = processor(text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
    image_embs = projected_features(model.get_image_features(**image_inputs))
    image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
    text_embs = projected_features(model.get_text_features(**text_inputs))
    text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
    factor = model.logit_scale.exp() if scale is None else scale
    return (factor * (text_embs @ image_embs.T))[0, 0].item()


@pytest.mark.parametrize(("name", "scale"), [("pickscore", None), ("clip-score", 100.0)])
def test_torch_preprocessing_matches_processor(clip_dir, reference, name, scale):
    reward = build_reward(name, model=clip_dir)
    worst = 0.0
    for seed, (size, prompt) in enumerate(zip(PIL_SIZES, PROMPTS)):
        image = random_pil(*size, seed)
        ours = reward(to_tensor(image), [prompt]).item()
        expected = reference_score(*reference, image, prompt, scale=scale)
        worst = max(worst, abs(ours - expected) / abs(expected))
    print(f"{name}: max relative score difference {worst:.2e}")
    assert worst <= REL_TOL


def test_resize_rounding_matches_transformers():
    assert shortest_edge_size(200, 300, 224) == (224, 336)
    assert shortest_edge_size(300, 200, 224) == (336, 224)
    assert shortest_edge_size(250, 513, 224) == (224, int(224 * 513 / 250))


@pytest.mark.parametrize("name", ["pickscore", "clip-score"])
def test_clip_reward_gradient_reaches_images(clip_dir, name):
    reward = build_reward(name, model=clip_dir)
    images = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scores = reward(images, PROMPTS[:2])
    assert scores.shape == (2,) and scores.dtype == torch.float32
    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_clip_reward_is_frozen_and_batched(clip_dir):
    reward = build_reward("pickscore", model=clip_dir)
    assert not reward.model.training
    assert not any(p.requires_grad for p in reward.model.parameters())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    batch = reward(images, PROMPTS[:2])
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_clip_reward_casts_to_model_dtype(clip_dir):
    reward = build_reward("pickscore", model=clip_dir, dtype=torch.bfloat16)
    assert reward.model.dtype == torch.bfloat16
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    scores = reward(images, PROMPTS[:1])
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad.dtype == torch.float64 and torch.isfinite(images.grad).all()


def _fake_hub_snapshot(cache, repo_id: str, files_from) -> None:
    """Lay out ``files_from``'s files as the cached snapshot of ``repo_id`` (HF cache layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files_from:
        (snapshot / name.name).write_bytes(name.read_bytes())


def _offline_cache(monkeypatch, cache) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import time


def test_pickscore_without_processor_uses_fallback(clip_dir, tmp_path, monkeypatch):
    files = sorted(Path(clip_dir).iterdir())
    model_only = tmp_path / "model_only"
    model_only.mkdir()
    for f in files:
        if f.name in ("config.json", "model.safetensors"):
            (model_only / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "hub"
    cache.mkdir()
    _offline_cache(monkeypatch, cache)
    with pytest.raises(ReNegError, match=PICKSCORE_PROCESSOR):
        build_reward("pickscore", model=str(model_only))
    with pytest.raises(ReNegError, match="no processor"):
        build_reward("clip-score", model=str(model_only))
    _fake_hub_snapshot(cache, PICKSCORE_PROCESSOR, [f for f in files if f.name not in ("config.json", "model.safetensors")])
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(build_reward("pickscore", model=str(model_only))(images, PROMPTS[:1]),
                               build_reward("pickscore", model=clip_dir)(images, PROMPTS[:1]))


def test_hub_id_not_in_cache_is_a_usage_error(tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path)
    with pytest.raises(ReNegError, match="yuvalkirstain/PickScore_v1"):
        build_reward("pickscore")
    with pytest.raises(ReNegError, match="openai/clip-vit-large-patch14"):
        build_reward("clip-score")
    with pytest.raises(ReNegError, match="does not exist"):
        build_reward("pickscore", model=str(tmp_path / "missing"))


def test_unknown_reward_lists_choices():
    with pytest.raises(ReNegError) as error:
        build_reward("imagereward-9000")
    message = str(error.value)
    assert "imagereward-9000" in message and all(name in message for name in BUILTINS)


def test_registry_lists_builtins_and_rejects_duplicates():
    rewards = available_rewards()
    assert BUILTINS <= set(rewards) and all(rewards[name] for name in BUILTINS)
    with pytest.raises(ReNegError, match="reward 'contrast' is already registered"):
        register_reward("contrast")(lambda model, *, device, dtype: None)


def test_simple_reward_rejects_a_model():
    with pytest.raises(ReNegError, match="no model"):
        build_reward("contrast", model="some/model")


@pytest.mark.parametrize("name", ["contrast", "saturation", "random-linear"])
def test_simple_rewards_shape_and_gradient(name):
    reward = build_reward(name)
    assert isinstance(reward, Reward)
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(3), requires_grad=True)
    scores = reward(images, ["p"] * 3)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["contrast", "saturation"])
def test_simple_rewards_have_finite_gradient_on_flat_images(name):
    images = torch.zeros(2, 3, 8, 8, requires_grad=True)
    build_reward(name)(images, ["p", "q"]).sum().backward()
    assert torch.isfinite(images.grad).all()


def test_simple_rewards_order_images_sensibly():
    gray = torch.full((1, 3, 16, 16), 0.5)
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[..., ::2, :] = 1.0
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 1.0
    contrast, saturation = build_reward("contrast"), build_reward("saturation")
    assert contrast(stripes, ["p"]) > contrast(gray, ["p"])
    assert saturation(red, ["p"]).item() == pytest.approx(1.0, abs=1e-6)
    assert saturation(gray, ["p"]).item() == pytest.approx(0.0, abs=1e-6)


def test_random_linear_is_fixed_and_size_agnostic():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    first, second = build_reward("random-linear"), build_reward("random-linear")
    torch.testing.assert_close(first(images, ["a", "b"]), second(images, ["a", "b"]))
    upscaled = F.interpolate(images, scale_factor=2, mode="nearest")
    torch.testing.assert_close(first(upscaled, ["a", "b"]), first(images, ["a", "b"]))


def test_combine_is_the_weighted_sum():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), requires_grad=True)
    contrast, saturation = build_reward("contrast"), build_reward("saturation")
    total = combine({"contrast": (contrast, 2.0), "saturation": (saturation, -0.5)})
    expected = 2.0 * contrast(images, ["a", "b"]) - 0.5 * saturation(images, ["a", "b"])
    torch.testing.assert_close(total(images, ["a", "b"]), expected)
    assert set(total.components(images, ["a", "b"])) == {"contrast", "saturation"}
    with pytest.raises(ReNegError):
        combine({})


def test_bad_inputs_are_usage_errors():
    reward = build_reward("contrast")
    with pytest.raises(ReNegError, match="one prompt per image"):
        reward(torch.rand(2, 3, 8, 8), ["only one"])
    with pytest.raises(ReNegError, match=r"\(B, 3, H, W\)"):
        reward(torch.rand(3, 8, 8), ["p"])
