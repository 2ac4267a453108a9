"""The papers' reward models on tiny random weights saved in the real checkpoints' formats.

For each reward: the torch preprocessing gives the score of the reference
preprocessing (PIL/torchvision, written here as the reference repo does it),
gradients reach the images, and a missing checkpoint is a one-line ReNegError
naming the file and where to get it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from test_rewards import _fake_hub_snapshot, _offline_cache
from torch import nn
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
from transformers import BertTokenizer, CLIPModel, CLIPProcessor

from reneg.errors import ReNegError
from reneg.models.tiny import tiny_clip
from reneg.rewards import DIAGNOSTICS, available_rewards, build_reward, build_rewards_from_config, diagnostic_rewards
from reneg.rewards.aesthetic import load_aesthetic
from reneg.rewards.clip import projected_features
from reneg.rewards.hps import HpsReward, load_hps, resize_longest_and_pad
from reneg.rewards.imagereward import SCORE_MEAN, SCORE_STD, ImageRewardModel, load_imagereward
from reneg.rewards.min_object import fill_templates, object_phrases

#: PIL sizes (width, height): upscaled square, landscape, portrait, odd-sized downscale.
PIL_SIZES = [(64, 64), (300, 200), (200, 300), (513, 250)]
PROMPTS = ["a photo of a cat", "a red car with a blue sofa", "two dogs", "a cat and a dog"]
REL_TOL = 1e-3
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: A tiny open_clip config in HPS's layout (ViT image tower at the real 224 input, CLIP text tower).
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
#: A tiny BLIP: ViT at the real 224 input and a 2-layer cross-attention BERT with BLIP's vocabulary size.
TINY_BLIP_VIT = {"img_size": 224, "patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 4}
TINY_MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
    "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}
BERT_SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: The words of PROMPTS, so the tiny BERT vocabulary tokenizes them into real ids.
BERT_WORDS = sorted({word for prompt in PROMPTS for word in prompt.split()})


def random_pil(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


def max_relative_difference(reward, reference_score) -> float:
    """Worst |ours - reference| / |reference| over PIL_SIZES x PROMPTS."""
    worst = 0.0
    for seed, (size, prompt) in enumerate(zip(PIL_SIZES, PROMPTS)):
        image = random_pil(*size, seed)
        ours = reward(to_tensor(image), [prompt]).item()
        expected = reference_score(image, prompt)
        worst = max(worst, abs(ours - expected) / abs(expected))
    return worst


def clip_load_transform(size: int = 224) -> Compose:
    """OpenAI ``clip.load``'s transform (also ImageReward's ``_transform``)."""
    return Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size),
                    lambda image: image.convert("RGB"), ToTensor(), Normalize(OPENAI_MEAN, OPENAI_STD)])


# ---------------------------------------------------------------- fixtures: tiny checkpoints in the real formats


@pytest.fixture(scope="module")
def hps_dir(tmp_path_factory):
    """Tiny open_clip weights saved as HPS checkpoints ({"state_dict": fp16 tensors}, both file names)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_OPEN_CLIP)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    directory = tmp_path_factory.mktemp("hps")
    state = {"state_dict": {key: value.half() for key, value in model.state_dict().items()}}
    for name in ("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"):
        torch.save(state, directory / name)
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    model, processor = tiny_clip(seed=1)
    directory = tmp_path_factory.mktemp("clip")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def reference_aesthetic_mlp(input_size: int) -> nn.Module:
    """``MLP`` of improved-aesthetic-predictor's simple_inference.py (ReLUs commented out there)."""
    module = nn.Module()
    module.layers = nn.Sequential(
        nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )
    return module


@pytest.fixture(scope="module")
def aesthetic_head(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        head = reference_aesthetic_mlp(16)
    path = tmp_path_factory.mktemp("aesthetic") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(head.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def imagereward_dir(tmp_path_factory):
    """ImageReward.pt in the reference key layout (blip.*, mlp.*, plus unused keys), med_config.json, a BERT vocab."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = ImageRewardModel(vision=TINY_BLIP_VIT, med_config=TINY_MED_CONFIG)
    state = {f"blip.visual_encoder.{k}": v for k, v in model.visual_encoder.state_dict().items()}
    state |= {f"blip.text_encoder.{k}": v for k, v in model.text_encoder.state_dict().items()}
    state |= {f"mlp.{k}": v for k, v in model.mlp.state_dict().items()}
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    state["blip.vision_proj.weight"] = torch.zeros(256, TINY_BLIP_VIT["embed_dim"])
    directory = tmp_path_factory.mktemp("imagereward")
    torch.save(state, directory / "ImageReward.pt")
    (directory / "med_config.json").write_text(json.dumps(TINY_MED_CONFIG))
    (directory / "tokenizer").mkdir()
    (directory / "tokenizer" / "vocab.txt").write_text("\n".join(BERT_SPECIALS + BERT_WORDS) + "\n")
    return directory


def load_tiny(name: str, paths, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The tiny reward ``name`` from the fixtures' files on ``device``/``dtype``."""
    hps_dir, clip_dir, aesthetic_head, imagereward_dir = paths
    loaders = {
        "hpsv2.1": lambda: load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP, device=device, dtype=dtype),
        "aesthetic": lambda: load_aesthetic(str(aesthetic_head), clip=str(clip_dir), device=device, dtype=dtype),
        "imagereward": lambda: load_imagereward(str(imagereward_dir), tokenizer=str(imagereward_dir / "tokenizer"),
                                                vision=TINY_BLIP_VIT, device=device, dtype=dtype),
    }
    return loaders[name]()


@pytest.fixture(scope="module")
def rewards(hps_dir, clip_dir, aesthetic_head, imagereward_dir):
    """Each paper reward loaded from its tiny checkpoint through the public loaders."""
    paths = (hps_dir, clip_dir, aesthetic_head, imagereward_dir)
    loaded = {name: load_tiny(name, paths) for name in ("hpsv2.1", "aesthetic", "imagereward")}
    for name in ("clip-score-min-object", "clip-score-full-prompt"):
        loaded[name] = build_reward(name, model=str(clip_dir))
    return loaded


# ---------------------------------------------------------------- (a) torch preprocessing == reference preprocessing


def hps_reference_transform(image: Image.Image, size: int = 224) -> torch.Tensor:
    """HPSv2 ``preprocess_val``: RGB, ToTensor, ``ResizeMaxSize(224, fill=0)`` on the tensor, Normalize."""
    tensor = TF.to_tensor(image.convert("RGB"))
    height, width = tensor.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_size = tuple(round(dim * scale) for dim in (height, width))
        tensor = TF.resize(tensor, new_size, InterpolationMode.BICUBIC)
        pad_h, pad_w = size - new_size[0], size - new_size[1]
        tensor = TF.pad(tensor, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(tensor, OPENAI_MEAN, OPENAI_STD)


def test_hps_matches_reference(hps_dir, rewards):
    import open_clip

    model = open_clip.CLIP(**TINY_OPEN_CLIP, output_dict=True).eval()
    model.load_state_dict(torch.load(hps_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"])

    @torch.no_grad()
    def reference(image, prompt):  # hpsv2.img_score.score
        outputs = model(hps_reference_transform(image).unsqueeze(0), open_clip.tokenize([prompt]))
        return torch.diagonal(outputs["image_features"] @ outputs["text_features"].T).item()

    worst = max_relative_difference(rewards["hpsv2.1"], reference)
    print(f"hpsv2.1: max relative score difference {worst:.2e}")
    assert worst <= REL_TOL


def test_aesthetic_matches_reference(clip_dir, aesthetic_head, rewards):
    clip = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    head = reference_aesthetic_mlp(16).eval()
    head.load_state_dict(torch.load(aesthetic_head, weights_only=True))
    transform = clip_load_transform()

    @torch.no_grad()
    def reference(image, prompt):  # simple_inference.py
        features = projected_features(clip.get_image_features(pixel_values=transform(image).unsqueeze(0))).numpy()
        norm = np.atleast_1d(np.linalg.norm(features, 2, -1))
        norm[norm == 0] = 1
        return head.layers(torch.from_numpy(features / np.expand_dims(norm, -1)).float()).item()

    worst = max_relative_difference(rewards["aesthetic"], reference)
    print(f"aesthetic: max relative score difference {worst:.2e}")
    assert worst <= REL_TOL


def test_imagereward_matches_reference(imagereward_dir, rewards):
    model = ImageRewardModel(vision=TINY_BLIP_VIT, med_config=TINY_MED_CONFIG).eval()
    model.load_checkpoint(torch.load(imagereward_dir / "ImageReward.pt", weights_only=True), what="test")
    tokenizer = BertTokenizer.from_pretrained(imagereward_dir / "tokenizer")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    transform = clip_load_transform()

    @torch.no_grad()
    def reference(image, prompt):  # ImageReward.score
        text = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image_embeds = model.visual_encoder.forward_features(transform(image).unsqueeze(0))
        image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
        output = model.text_encoder(text.input_ids, attention_mask=text.attention_mask,
                                    encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        rewards_ = model.mlp(output.last_hidden_state[:, 0, :].float())
        return ((rewards_ - SCORE_MEAN) / SCORE_STD).item()

    worst = max_relative_difference(rewards["imagereward"], reference)
    print(f"imagereward: max relative score difference {worst:.2e}")
    assert worst <= REL_TOL


@pytest.mark.parametrize("name", ["clip-score-min-object", "clip-score-full-prompt"])
def test_attend_and_excite_clip_scores_match_reference(clip_dir, rewards, name):
    clip = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tokenizer = CLIPProcessor.from_pretrained(clip_dir).tokenizer
    transform = clip_load_transform()

    @torch.no_grad()
    def text_embedding(text):  # A&E get_embedding_for_prompt with the ImageNet templates
        tokens = tokenizer(fill_templates(text), padding=True, return_tensors="pt")
        embeddings = projected_features(clip.get_text_features(**tokens))
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        embedding = embeddings.mean(dim=0)
        return embedding / embedding.norm()

    @torch.no_grad()
    def reference(image, prompt):  # A&E compute_clip_similarity.py
        features = projected_features(clip.get_image_features(pixel_values=transform(image).unsqueeze(0)))
        features = features / features.norm(dim=-1, keepdim=True)
        if name == "clip-score-full-prompt":
            return (features @ text_embedding(prompt)).item()
        parts = object_phrases(prompt)
        return min((features @ text_embedding(part)).item() for part in parts[:2])

    worst = max_relative_difference(rewards[name], reference)
    print(f"{name}: max relative score difference {worst:.2e}")
    assert worst <= REL_TOL


# ---------------------------------------------------------------- (b) gradients, batching, identity


@pytest.mark.parametrize("name", ["hpsv2.1", "aesthetic", "imagereward", "clip-score-min-object"])
def test_gradients_reach_images(rewards, name):
    images = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scores = rewards[name](images, ["a cat and a dog", "two dogs"])
    assert scores.shape == (2,) and scores.dtype == torch.float32
    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["hpsv2.1", "imagereward"])
def test_batch_equals_single_images(rewards, name):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    batch = rewards[name](images, PROMPTS[:2])
    single = torch.cat([rewards[name](images[i : i + 1], PROMPTS[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
@pytest.mark.parametrize("name", ["hpsv2.1", "aesthetic", "imagereward"])
def test_low_precision_and_device(hps_dir, clip_dir, aesthetic_head, imagereward_dir, name, device):
    reward = load_tiny(name, (hps_dir, clip_dir, aesthetic_head, imagereward_dir), device=device,
                       dtype=torch.bfloat16)
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    scores = reward(images, PROMPTS[:2])
    assert scores.dtype == torch.float32 and scores.device == images.device and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad.dtype == torch.float64 and torch.isfinite(images.grad).all()


def test_hps_version_is_recorded(hps_dir):
    old = build_rewards_from_config({"hpsv2": {"model": str(hps_dir), "architecture": TINY_OPEN_CLIP}})
    reward = old.rewards["hpsv2"][0]
    assert (reward.version, reward.name) == ("v2.0", "hpsv2")
    newer = load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP)
    assert (newer.version, newer.name) == ("v2.1", "hpsv2.1")


def test_hps_takes_an_open_clip_resnet_tower():
    """An open_clip CLIP with a ResNet vision tower (its ``image_size`` an int, a ViT's a pair) scores like a ViT."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    config = {**TINY_OPEN_CLIP, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16}}
    torch.manual_seed(0)
    reward = HpsReward(open_clip.CLIP(**config, output_dict=True), SimpleTokenizer(), version="v2.1")
    assert reward.image_size == 64
    scores = reward(torch.rand(2, 3, 48, 80), ["a cat", "a dog"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_hps_pads_to_a_centred_square():
    images = torch.ones(1, 3, 200, 300)
    padded = resize_longest_and_pad(images, 224)
    rows = padded[0, 0].amax(dim=1) > 0.5
    assert padded.shape == (1, 3, 224, 224)
    assert rows.nonzero().min().item() == 37 and rows.nonzero().max().item() == 37 + 149 - 1


def test_object_phrases_rule():
    assert object_phrases("a cat and a dog") == ["a cat", "a dog"]
    assert object_phrases("a red bench with a blue bird") == ["a red bench", "a blue bird"]
    assert object_phrases("a bear and a turtle with a hat") == ["a bear", "a turtle with a hat"]
    assert object_phrases("a lighthouse") == ["a lighthouse"]
    assert fill_templates("a cat")[0] == "a bad photo of a cat." and len(fill_templates("a cat")) == 80


# ---------------------------------------------------------------- (c) missing and mismatched checkpoints


MISSING = {  # reward -> (file named in the message, hub repo named in the message)
    "hpsv2": ("HPS_v2_compressed.pt", "xswu/HPSv2"),
    "hpsv2.1": ("HPS_v2.1_compressed.pt", "xswu/HPSv2"),
    "aesthetic": ("aesthetic-model.pth", "trl-lib/ddpo-aesthetic-predictor"),
    "imagereward": ("ImageReward.pt", "THUDM/ImageReward"),
    "clip-score-min-object": ("", "openai/clip-vit-base-patch16"),
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_checkpoint_is_a_one_line_usage_error(name, tmp_path, monkeypatch):
    filename, repo = MISSING[name]
    _offline_cache(monkeypatch, tmp_path)
    with pytest.raises(ReNegError) as cache_miss:
        build_reward(name)
    message = str(cache_miss.value)
    assert filename in message and repo in message and "hf download" in message and "\n" not in message
    with pytest.raises(ReNegError) as no_file:
        build_reward(name, model=str(tmp_path / "missing.pt"))
    assert "does not exist" in str(no_file.value) and "\n" not in str(no_file.value)


def test_hub_id_resolves_from_the_cache(hps_dir, tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path)
    _fake_hub_snapshot(tmp_path, "xswu/HPSv2", [hps_dir / "HPS_v2.1_compressed.pt"])
    total = build_rewards_from_config({"hpsv2.1": {"architecture": TINY_OPEN_CLIP}})
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = load_hps(str(hps_dir / "HPS_v2.1_compressed.pt"), architecture=TINY_OPEN_CLIP)(images, ["a cat"])
    torch.testing.assert_close(total(images, ["a cat"]), expected)
    with pytest.raises(ReNegError, match="HPS_v2_compressed.pt"):  # v2.0's file is not in that snapshot
        build_rewards_from_config({"hpsv2": {"architecture": TINY_OPEN_CLIP}})


def test_checkpoint_of_another_architecture_is_a_usage_error(hps_dir, aesthetic_head, imagereward_dir, clip_dir):
    other = dict(TINY_OPEN_CLIP, embed_dim=8)
    with pytest.raises(ReNegError, match="does not fit"):
        load_hps(str(hps_dir), architecture=other)
    with pytest.raises(ReNegError, match="does not fit"):
        load_imagereward(str(imagereward_dir), tokenizer=str(imagereward_dir / "tokenizer"),
                         vision=dict(TINY_BLIP_VIT, depth=1))
    with pytest.raises(ReNegError, match="layers.0.weight"):
        load_aesthetic(str(hps_dir / "HPS_v2.1_compressed.pt"), clip=str(clip_dir))
    with pytest.raises(ReNegError, match="unknown open_clip architecture"):
        load_hps(str(hps_dir), architecture="ViT-Nope")


# ---------------------------------------------------------------- diagnostics and weighted combinations


def reference_colorfulness(image: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) on an (H, W, 3) 0-255 array, with numpy."""
    red, green, blue = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = red - green, 0.5 * (red + green) - blue
    return math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())


def test_colorfulness_matches_numpy_and_is_a_diagnostic():
    assert set(DIAGNOSTICS) == {"colorfulness", "saturation"} and set(DIAGNOSTICS) <= set(available_rewards())
    diagnostics = diagnostic_rewards()
    for seed, size in enumerate(PIL_SIZES[:3]):
        image = random_pil(*size, seed)
        ours = diagnostics["colorfulness"](to_tensor(image), ["p"]).item()
        assert ours == pytest.approx(reference_colorfulness(np.asarray(image)), rel=1e-5)
    gray = torch.full((2, 3, 8, 8), 0.5, requires_grad=True)
    scores = diagnostics["colorfulness"](gray, ["p", "q"])
    assert scores.abs().max() < 1e-2
    scores.sum().backward()
    assert torch.isfinite(gray.grad).all()


def test_build_rewards_from_config_weights_and_options():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    total = build_rewards_from_config({"colorfulness": -0.01, "sat": {"reward": "saturation", "weight": 2}})
    colorfulness, saturation = build_reward("colorfulness"), build_reward("saturation")
    expected = -0.01 * colorfulness(images, ["a", "b"]) + 2 * saturation(images, ["a", "b"])
    torch.testing.assert_close(total(images, ["a", "b"]), expected)
    assert set(total.components(images, ["a", "b"])) == {"colorfulness", "sat"}


@pytest.mark.parametrize(("table", "match"), [
    ({}, "empty"),
    ({"saturation": "high"}, "finite number"),
    ({"saturation": float("nan")}, "finite number"),
    ({"saturation": {"weight": 1, "clip": "x"}}, "unknown option"),
    ({"no-such-reward": 1.0}, "unknown reward"),
])
def test_build_rewards_from_config_rejects_bad_tables(table, match):
    with pytest.raises(ReNegError, match=match):
        build_rewards_from_config(table)


@pytest.mark.parametrize("antialias", [True, False])
def test_hps_resize_antialias_matches_torch(hps_dir, antialias):
    """``antialias`` picks torch's antialiased bicubic (the default) or the plain one of torchvision < 0.17."""
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    reward = load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP, antialias=antialias)
    other = load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP, antialias=not antialias)
    assert load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP).antialias is True  # the default
    pixels = torch.round(images * 255) / 255  # what the saved uint8 image holds
    resized = torch.nn.functional.interpolate(pixels, size=(224, 224), mode="bicubic", align_corners=False,
                                              antialias=antialias)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(reward.preprocess(images), (resized - mean) / std)
    assert (reward.preprocess(images) - other.preprocess(images)).abs().max() > 0.1
    scores = reward(images, PROMPTS[:2])
    assert not torch.allclose(scores, other(images, PROMPTS[:2]))
    with pytest.raises(ReNegError, match="antialias must be true or false"):
        load_hps(str(hps_dir), architecture=TINY_OPEN_CLIP, antialias="no")
