"""Human Preference Score v2 and v2.1 (Wu et al. 2023): a fine-tuned open_clip ViT-H-14, as ``hpsv2.score``.

Reference: ``tgxs002/HPSv2`` ``hpsv2/img_score.py``. The score is
``image_features @ text_features.T`` of the L2-normalised open_clip features,
i.e. the plain cosine, without ``logit_scale`` (about 0.2-0.3 for good
images). Preprocessing (``light_augmentation=True`` -> ``ResizeMaxSize`` in
``hpsv2/src/open_clip/transform.py``): ``ToTensor`` on the uint8 image, then
the longest side resized to 224 by torchvision's *tensor* bicubic resize
(unclamped float), zero padding (black) to a square split as
``(pad // 2, pad - pad // 2)`` left/top and right/bottom, then OpenAI CLIP
normalisation. HPSv2's open_clip fork and open_clip 3.x share the CLIP
module layout, so the checkpoint's ``state_dict`` loads into
``open_clip.CLIP`` unchanged.

Antialiasing: torchvision >= 0.17 antialiases a tensor resize by default, and
so does this module (``antialias=True``, the default). The HPSv2 reference ran
under torchvision < 0.17, whose tensor resize did *not* antialias, so the
papers' absolute HPS numbers were probably made without it; a 512 -> 224
resize differs by up to 1.4 normalised units between the two. Pass
``antialias=False`` (``reneg eval --metrics hpsv2.1:antialias=false``) to
compare with those numbers.

Checkpoints: ``HPS_v2_compressed.pt`` (v2.0) and ``HPS_v2.1_compressed.pt``
(v2.1) of the hub repo ``xswu/HPSv2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..errors import ReNegError
from .base import FrozenModelReward, as_scores, check_inputs, freeze, register_reward
from .clip import straight_through_quantize
from .files import CheckpointSource, load_module_weights, load_weights, resolve_checkpoint

HPS_REPO = "xswu/HPSv2"
#: Checkpoint file of each HPS version (``hps_version_map`` of the reference).
HPS_CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
#: The open_clip architecture both versions fine-tune.
HPS_ARCHITECTURE = "ViT-H-14"
#: ``ResizeMaxSize``'s fill value (in [0,1] units, before normalisation): black.
PAD_FILL = 0.0


def resize_longest_and_pad(images: torch.Tensor, size: int, *, fill: float = PAD_FILL,
                           antialias: bool = True) -> torch.Tensor:
    """HPSv2's ``ResizeMaxSize``: longest side to ``size`` (bicubic, antialiased unless told), then padded to square.

    New sides are ``round(side * size / longest)`` (Python rounding, as the
    reference). The reference skips resize *and* pad when the longest side is
    already ``size``, which leaves a non-square image its ViT cannot take; here
    such an image is padded.
    """
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    new_height, new_width = round(height * scale), round(width * scale)
    if (new_height, new_width) != (height, width):
        images = F.interpolate(images, size=(new_height, new_width), mode="bicubic", align_corners=False,
                               antialias=antialias)
    pad_h, pad_w = size - new_height, size - new_width
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


class HpsReward(FrozenModelReward):
    """HPS ``cos(E_img(x), E_txt(p))`` of an open_clip CLIP; ``version`` is ``"v2.0"`` or ``"v2.1"``.

    ``antialias`` (default True) antialiases the resize to the ViT's size; False is
    what the reference computed under torchvision < 0.17 (see the module docstring).
    The model stays loaded; text features are cached for the last prompt list.
    """

    def __init__(self, model, tokenizer, *, version: str, quantize: bool = True, antialias: bool = True):
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.version = version
        self.name = registered_name(version)
        size = model.visual.image_size  # a ViT's (h, w); open_clip's CLIP ResNet (ModifiedResNet) keeps an int
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.quantize = quantize
        self.antialias = antialias
        self.mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        self._text_cache: tuple[tuple[str, ...], torch.Tensor] | None = None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> normalised, padded ``size x size`` pixels (float32); uint8 rounding is straight-through."""
        images = images.float().clamp(0.0, 1.0)
        if self.quantize:
            images = straight_through_quantize(images)
        images = resize_longest_and_pad(images, self.image_size, antialias=self.antialias)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised text features ``(B, D)`` (float32), cached for the last prompt list."""
        key = tuple(prompts)
        if self._text_cache is None or self._text_cache[0] != key:
            tokens = self.tokenizer(list(key)).to(self.device)
            self._text_cache = (key, F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return self._text_cache[1]

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features ``(B, D)`` (float32), differentiable in ``images``."""
        pixels = self.preprocess(images.to(self.device)).to(self.dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)
        return as_scores(cosine, images)


def registered_name(version: str) -> str:
    """``"v2.0"`` -> ``"hpsv2"``, ``"v2.1"`` -> ``"hpsv2.1"``."""
    return "hpsv2" if version == "v2.0" else f"hps{version}"


def _open_clip_config(architecture: str | Mapping[str, Any]) -> dict:
    import open_clip

    if isinstance(architecture, Mapping):
        return dict(architecture)
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ReNegError(f"unknown open_clip architecture '{architecture}' for HPS: use {HPS_ARCHITECTURE} "
                         f"or pass an open_clip model config dict")
    return config


def load_hps(
    checkpoint: str | None, *, version: str = "v2.1", architecture: str | Mapping[str, Any] = HPS_ARCHITECTURE,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, antialias: bool = True,
) -> HpsReward:
    """Load an HPS reward.

    Args:
        checkpoint: the ``.pt`` file, a directory holding it, or a cached hub id (default ``xswu/HPSv2``).
        version: ``"v2.0"`` or ``"v2.1"``; picks the checkpoint file name within a directory or hub repo.
        architecture: an open_clip model name, or an open_clip model config dict
            (``{"embed_dim", "vision_cfg", "text_cfg"}``), e.g. a tiny ViT in tests.
        device, dtype: where the frozen model lives.
        antialias: antialias the resize to 224 (default True; False as under torchvision < 0.17).
    """
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if version not in HPS_CHECKPOINTS:
        raise ReNegError(f"unknown HPS version '{version}': choose one of {', '.join(HPS_CHECKPOINTS)}")
    if not isinstance(antialias, bool):
        raise ReNegError(f"HPS option antialias must be true or false, got {antialias!r}")
    source = CheckpointSource(f"HPS {version} checkpoint", HPS_REPO, (HPS_CHECKPOINTS[version],))
    path = resolve_checkpoint(checkpoint, source)
    config = _open_clip_config(architecture)
    try:
        model = open_clip.CLIP(**config, output_dict=True)
    except (TypeError, ValueError, KeyError) as error:
        raise ReNegError(f"invalid open_clip config for HPS: {error}") from None
    weights = load_weights(path, what=source.what)
    load_module_weights(model, weights.get("state_dict", weights), what=f"{source.what} '{path}'")
    tokenizer = SimpleTokenizer(context_length=config["text_cfg"].get("context_length", 77))
    return HpsReward(model.to(device=device, dtype=dtype), tokenizer, version=version, antialias=antialias)


@register_reward("hpsv2", default_model=HPS_REPO,
                 description="HPS v2.0 (Wu et al. 2023): cos(image, text) of a fine-tuned open_clip ViT-H-14")
def hpsv2(model: str | None, *, device: torch.device, dtype: torch.dtype,
          architecture: str | Mapping[str, Any] = HPS_ARCHITECTURE, antialias: bool = True) -> HpsReward:
    """HPS v2.0 from ``HPS_v2_compressed.pt``."""
    return load_hps(model, version="v2.0", architecture=architecture, device=device, dtype=dtype,
                    antialias=antialias)


@register_reward("hpsv2.1", default_model=HPS_REPO,
                 description="HPS v2.1 (Wu et al. 2023): cos(image, text) of a fine-tuned open_clip ViT-H-14")
def hpsv2_1(model: str | None, *, device: torch.device, dtype: torch.dtype,
            architecture: str | Mapping[str, Any] = HPS_ARCHITECTURE, antialias: bool = True) -> HpsReward:
    """HPS v2.1 from ``HPS_v2.1_compressed.pt``."""
    return load_hps(model, version="v2.1", architecture=architecture, device=device, dtype=dtype,
                    antialias=antialias)
