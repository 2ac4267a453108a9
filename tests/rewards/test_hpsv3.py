"""HPSv3 on a tiny random Qwen2-VL saved as the real set-up (``HPSv3.safetensors`` beside its base's files).

The hpsv3 package pins transformers 4.45.2, so its own scoring cannot run here; what is checked instead:
the preprocessing against the package's algorithm written out here (and against the package's own code
when it is on disk, ``HPSV3_PACKAGE`` or an installed ``hpsv3``), the patch order against transformers'
Qwen2-VL image processor, the prompt text against the package's, the forward pass against transformers'
``Qwen2VLModel`` run with the package's positions, and the gradient through a ReNeg step.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_rewards import _fake_hub_snapshot, _offline_cache

from reneg.cli import main
from reneg.errors import ReNegError
from reneg.families import family_for
from reneg.methods.randomness import draw_batch
from reneg.methods.reneg.objective import reneg_objective
from reneg.models.tiny import save_tiny_hpsv3, tiny_sd_pipeline
from reneg.rewards import build_reward
from reneg.rewards.hpsv3 import (
    HPSV3_BASE,
    INSTRUCTION,
    PIXELS,
    PROMPT_SUFFIX,
    REWARD_TOKEN,
    Hpsv3Preprocess,
    load_hpsv3,
    patchify,
    smart_resize,
)

PROMPTS = ["a red circle on a blue background", "a cat"]
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
#: (width, height) -> the size the package's ``fetch_image`` resizes to (run with the package's code).
PACKAGE_SIZES = {(64, 64): (448, 448), (300, 200): (560, 392), (200, 300): (392, 560), (513, 250): (644, 336),
                 (512, 512): (448, 448), (1024, 768): (504, 364), (1000, 30): (2604, 84)}
#: sha256 of ``INSTRUCTION.format(text_prompt="a cat") + prompt_with_special_token`` of the package's
#: hpsv3/dataset/data_collator_qwen.py (hpsv3 1.0.0).
PACKAGE_TEXT_SHA256 = "58f765b8739946ac474c741df3766ebc3df8c43e966cea2edbdce196c41a2bd4"


@pytest.fixture(scope="module")
def hpsv3_dir(tmp_path_factory):
    return save_tiny_hpsv3(tmp_path_factory.mktemp("hpsv3"))


@pytest.fixture(scope="module")
def reward(hpsv3_dir):
    return build_reward("hpsv3", model=str(hpsv3_dir))


def random_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


# ---------------------------------------------------------------- the reward end to end


def test_scores_tiny_sd_images_through_the_registry(reward, capsys):
    from reneg.core.rollout import rollout, text_branches

    family = family_for(tiny_sd_pipeline())
    latents = family.initial_latents(2, resolution=64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        branches = text_branches(family, family.encode(PROMPTS), family.null_text(), resolution=64)
        images = rollout(family, branches, latents, steps=3, guidance_scale=5.0)
        scores = reward(images, PROMPTS)
    assert images.shape == (2, 3, 64, 64)
    assert scores.shape == (2,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores[0] != scores[1]
    assert main(["rewards"]) == 0
    assert "hpsv3" in capsys.readouterr().out


def test_gradient_reaches_the_images_and_a_negative_embedding(reward):
    images = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0), requires_grad=True)
    reward(images, PROMPTS).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0

    family = family_for(tiny_sd_pipeline())
    batch = draw_batch(family, PROMPTS, seed=0, step=0, indices=range(2), resolution=64, steps=3, grad_window=2)
    null = family.null_text()
    negative = null.embeds.clone().requires_grad_(True)
    loss, rewards = reneg_objective(family, reward, batch, type(null)(negative, null.pooled), guidance_scale=5.0,
                                    steps=3, resolution=64)
    loss.backward()
    assert rewards.shape == (2,) and torch.isfinite(loss)
    assert torch.isfinite(negative.grad).all() and negative.grad.abs().sum() > 0


def test_batch_equals_single_images(reward):
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batch = reward(images, PROMPTS)
        single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_bf16_on_the_cpu(hpsv3_dir):
    reward = build_reward("hpsv3", model=str(hpsv3_dir), dtype=torch.bfloat16)
    assert reward.model.visual.get_dtype() == torch.bfloat16 and reward.model.rm_head[0].weight.dtype == torch.float32
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    scores = reward(images, PROMPTS[:1])
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad.dtype == torch.float64 and torch.isfinite(images.grad).all()


# ---------------------------------------------------------------- preprocessing == the package's


def package_preprocess(image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The package's scoring path, written out: ``fetch_image`` (PIL bicubic to ``smart_resize(..., 28, 256*28*28,
    256*28*28)``), then Qwen2-VL's image processor (same size, /255, CLIP mean/std, patches)."""
    width, height = image.size
    new_height, new_width = smart_resize(height, width)
    pixels = np.asarray(image.resize((new_width, new_height), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    pixels = ((pixels - CLIP_MEAN) / CLIP_STD).astype(np.float32).transpose(2, 0, 1)
    frames = np.tile(pixels[None], (2, 1, 1, 1))  # one image, temporal patch 2
    grid_h, grid_w = new_height // 14, new_width // 14
    patches = frames.reshape(1, 2, 3, grid_h // 2, 2, 14, grid_w // 2, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid_h * grid_w, 3 * 2 * 14 * 14), (1, grid_h, grid_w)


def test_smart_resize_gives_the_packages_sizes():
    for (width, height), (new_width, new_height) in PACKAGE_SIZES.items():
        assert smart_resize(height, width) == (new_height, new_width)
        assert new_height % 28 == 0 and new_width % 28 == 0
    with pytest.raises(ReNegError, match="aspect ratio"):
        smart_resize(10, 2100)


@pytest.mark.parametrize("size", [(64, 64), (300, 200), (513, 250), (1024, 768)])
def test_preprocessing_matches_the_packages_path(size):
    image = random_image(*size, seed=sum(size))
    expected, grid = package_preprocess(image)
    ours, our_grid = Hpsv3Preprocess()(to_tensor(image))
    assert our_grid.tolist() == [list(grid)] and ours.shape == expected.shape
    difference = (ours - torch.from_numpy(expected)).abs()
    # PIL's and torch's bicubic round to different uint8 levels on a few pixels: at most 2 levels in 1%.
    assert difference.max() < 2.5 / 255 / CLIP_STD.min() and (difference > 1e-4).float().mean() < 0.01


def test_patches_match_transformers_qwen2vl_image_processor():
    """The patch order and normalisation against transformers' own Qwen2-VL processor, on an image already of
    the budget's size (so its resize is the identity)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = random_image(448, 448, seed=3)
    processor = Qwen2VLImageProcessorPil(min_pixels=PIXELS, max_pixels=PIXELS)
    expected = processor(images=[image], return_tensors="pt")
    ours, grid = Hpsv3Preprocess()(to_tensor(image))
    assert grid.tolist() == expected["image_grid_thw"].tolist() == [[1, 32, 32]]
    torch.testing.assert_close(ours, expected["pixel_values"].float(), rtol=0, atol=1e-5)
    normalised = (to_tensor(image) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1).float()) / torch.tensor(
        CLIP_STD).view(1, 3, 1, 1).float()
    torch.testing.assert_close(patchify(normalised)[0], ours, rtol=0, atol=1e-5)


def _package_dir() -> Path | None:
    """The hpsv3 package's sources (an unpacked wheel or checkout holding ``hpsv3/``), where there are any."""
    if os.environ.get("HPSV3_PACKAGE"):
        return Path(os.environ["HPSV3_PACKAGE"]) / "hpsv3"
    spec = importlib.util.find_spec("hpsv3")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(_package_dir() is None, reason="the hpsv3 package's sources are not here (set HPSV3_PACKAGE)")
def test_preprocessing_and_text_match_the_package_code(monkeypatch):
    """The package's own ``fetch_image`` and image processor (its pure-torch/PIL modules, loaded by file path:
    the package imports transformers 4.45's trainer and cannot be imported whole)."""
    import transformers.image_utils
    from transformers.video_utils import VideoInput

    package = _package_dir()
    monkeypatch.setattr(transformers.image_utils, "VideoInput", VideoInput, raising=False)  # moved in v5
    utils = _load_by_path("hpsv3_dataset_utils", package / "dataset" / "utils.py")
    processing = _load_by_path("hpsv3_image_processor", package / "model" / "differentiable_image_processor.py")
    processor = processing.Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)  # the base's settings
    for seed, size in enumerate(PACKAGE_SIZES):
        image = random_image(*size, seed)
        resized = utils.fetch_image({"image": image, "min_pixels": PIXELS, "max_pixels": PIXELS})
        assert resized.size == PACKAGE_SIZES[size]
        expected = processor.preprocess(images=[resized], return_tensors="pt")
        ours, grid = Hpsv3Preprocess()(to_tensor(image))
        assert grid.tolist() == expected["image_grid_thw"].tolist()
        difference = (ours - expected["pixel_values"]).abs()
        assert difference.max() < 2.5 / 255 / CLIP_STD.min() and (difference > 1e-4).float().mean() < 0.01

    strings = {}
    for node in ast.parse((package / "dataset" / "data_collator_qwen.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            strings[node.targets[0].id] = node.value.value
    assert INSTRUCTION == strings["INSTRUCTION"] and PROMPT_SUFFIX == strings["prompt_with_special_token"]


# ---------------------------------------------------------------- text and model == the package's


def test_prompt_text_is_the_packages(reward):
    digest = hashlib.sha256((INSTRUCTION.format(text_prompt="a cat") + PROMPT_SUFFIX).encode()).hexdigest()
    assert digest == PACKAGE_TEXT_SHA256
    text = reward.texts(["a cat"], 3)[0]
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|>" + "<|image_pad|>" * 3 + "<|vision_end|>"
                    + INSTRUCTION.format(text_prompt="a cat") + PROMPT_SUFFIX + "<|im_end|>\n<|im_start|>assistant\n")
    tokens = reward.tokens(PROMPTS, 256)
    reward_id = reward.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
    assert (tokens.input_ids == reward_id).sum(dim=1).tolist() == [1, 1]
    assert (tokens.input_ids == reward.model.image_token_id).sum(dim=1).tolist() == [256, 256]
    assert tokens.attention_mask[:, 0].all() and not tokens.attention_mask.all()  # right padding


def test_score_is_mu_of_the_packages_forward(reward, hpsv3_dir):
    """transformers' ``Qwen2VLModel`` with the checkpoint, run as the package's forward runs it (sequential
    positions on the three M-RoPE axes), then the head at ``<|Reward|>``: the score is its first output (mu);
    the 3-D image positions of ``get_rope_index`` give another score."""
    from safetensors.torch import load_file
    from transformers import Qwen2VLConfig, Qwen2VLModel

    weights = load_file(str(hpsv3_dir / "HPSv3.safetensors"))
    config = Qwen2VLConfig.from_pretrained(hpsv3_dir)
    config.text_config.vocab_size = weights["model.embed_tokens.weight"].shape[0]
    model = Qwen2VLModel(config).eval()
    renamed = {("language_model." + key[6:] if key.startswith("model.") else key): value.float()
               for key, value in weights.items() if key.startswith(("visual.", "model."))}
    model.load_state_dict(renamed, strict=True)
    head = reward.model.rm_head

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    pixel_values, grid = Hpsv3Preprocess()(images)
    tokens = reward.tokens(PROMPTS, int(grid[0].prod()) // 4)
    length = tokens.input_ids.shape[1]
    sequential = torch.arange(length).view(1, 1, -1).expand(3, 2, -1)
    at_reward = tokens.input_ids == reward.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
    with torch.no_grad():
        hidden = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, position_ids=sequential,
                       pixel_values=pixel_values, image_grid_thw=grid).last_hidden_state
        expected = head(hidden[at_reward])[:, 0]
        mrope = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixel_values,
                      image_grid_thw=grid, mm_token_type_ids=(tokens.input_ids == config.image_token_id).int()
                      ).last_hidden_state
        scores = reward(images, PROMPTS)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(head(mrope[at_reward])[:, 0], expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- files: missing, cached, mismatched


def test_missing_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path)
    with pytest.raises(ReNegError) as cache_miss:
        build_reward("hpsv3")
    message = str(cache_miss.value)
    assert "HPSv3.safetensors" in message and "MizzenAI/HPSv3" in message and "hf download" in message
    assert "\n" not in message
    with pytest.raises(ReNegError) as no_file:
        build_reward("hpsv3", model=str(tmp_path / "missing.safetensors"))
    assert "does not exist" in str(no_file.value) and "\n" not in str(no_file.value)


def test_missing_base_is_a_one_line_error(hpsv3_dir, tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "HPSv3.safetensors").write_bytes((hpsv3_dir / "HPSv3.safetensors").read_bytes())
    with pytest.raises(ReNegError) as error:
        build_reward("hpsv3", model=str(alone))
    message = str(error.value)
    assert HPSV3_BASE in message and "hf download" in message and "not its weights" in message
    assert "\n" not in message
    with pytest.raises(ReNegError, match="lacks config.json"):
        build_reward("hpsv3", model=str(alone), base=str(tmp_path))


def test_hub_ids_resolve_from_the_cache(hpsv3_dir, reward, tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path)
    _fake_hub_snapshot(tmp_path, "MizzenAI/HPSv3", [hpsv3_dir / "HPSv3.safetensors"])
    _fake_hub_snapshot(tmp_path, HPSV3_BASE, [path for path in hpsv3_dir.iterdir() if path.suffix != ".safetensors"])
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(build_reward("hpsv3")(images, PROMPTS[:1]), reward(images, PROMPTS[:1]))


def test_checkpoint_of_another_architecture_is_refused(hpsv3_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(hpsv3_dir / "HPSv3.safetensors"))
    for name, change in {
        "no_head": lambda w: {k: v for k, v in w.items() if not k.startswith("rm_head.")},
        "stray": lambda w: {**w, "score.weight": torch.zeros(2, 32)},
        "layer": lambda w: {k: v for k, v in w.items() if not k.startswith("model.layers.1.")},
    }.items():
        path = tmp_path / name / "HPSv3.safetensors"
        path.parent.mkdir()
        save_file(change(dict(weights)), str(path))
        with pytest.raises(ReNegError) as error:
            load_hpsv3(str(path), base=str(hpsv3_dir))
        assert "HPSv3" in str(error.value) and "\n" not in str(error.value)
    config = json.loads((hpsv3_dir / "config.json").read_text())
    (tmp_path / "other").mkdir()
    for path in hpsv3_dir.iterdir():
        (tmp_path / "other" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "other" / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(ReNegError, match="does not fit|no HPSv3 reward head"):
        load_hpsv3(str(tmp_path / "other"))


def test_a_prompt_with_a_special_token_is_refused(reward):
    images = torch.rand(1, 3, 64, 64)
    for prompt in (f"a cat {REWARD_TOKEN}", "a cat <|image_pad|>"):
        with pytest.raises(ReNegError, match="special tokens"):
            reward(images, [prompt])
