"""CLIP-based rewards (PickScore, CLIPScore) with the image preprocessing done in torch so gradients flow.

Both load a transformers ``CLIPModel`` and ``CLIPProcessor`` from a local
directory or the local hub cache (:func:`reneg.models.hub.resolve`, never a download)
and score ``scale * cos(image_embeds, text_embeds)`` on the L2-normalised
projected features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from ..errors import ReNegError
from ..models import hub
from .base import FrozenModelReward, as_scores, check_inputs, freeze, register_reward

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
#: The processor the PickScore authors pair with PickScore_v1 (its base model, CLIP-H).
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_SCORE_MODEL = "openai/clip-vit-large-patch14"
#: CLIPScore's fixed scale w in ``w * cos`` (Hessel et al. 2021 use 2.5 on [0,1]; torchmetrics uses 100).
CLIP_SCORE_SCALE = 100.0
#: CLIP's text context length.
MAX_TEXT_TOKENS = 77
#: Files whose presence marks a directory as holding a saved processor (v5 writes processor_config.json).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: PIL resampling codes (the processor's ``resample``) as ``torch.nn.functional.interpolate`` modes.
INTERPOLATION_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
#: Modes for which ``interpolate`` low-pass filters when downscaling, as PIL and torchvision do.
ANTIALIASED_MODES = ("bilinear", "bicubic")
#: The processor's reference path stores images as uint8: 255 steps over [0, 1].
UINT8_LEVELS = 255


def _interpolation_mode(resample) -> str:
    """The ``interpolate`` mode for a processor's ``resample`` (a PIL code or a torchvision InterpolationMode)."""
    mode = getattr(resample, "value", resample)
    if isinstance(mode, str):
        mode = {"nearest": "nearest-exact"}.get(mode, mode)
        if mode in INTERPOLATION_MODES.values():
            return mode
    elif mode in INTERPOLATION_MODES:
        return INTERPOLATION_MODES[mode]
    raise ReNegError(f"unsupported image resampling {resample!r} in the reward's processor: use bicubic or bilinear")


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """(height, width) with the short side at ``shortest_edge``, long side ``int(shortest_edge * long / short)``.

    Same rounding (truncation) as transformers' ``get_resize_output_image_size(default_to_square=False)``.
    """
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre ``height x width``; offset ``(H - h) // 2`` as transformers, zero-padding a smaller image first."""
    pad_h, pad_w = max(height - images.shape[-2], 0), max(width - images.shape[-1], 0)
    if pad_h or pad_w:
        images = F.pad(images, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width]


def straight_through_quantize(images: torch.Tensor, *, levels: int = UINT8_LEVELS) -> torch.Tensor:
    """Round [0,1] values to ``levels`` steps in the forward pass, identity gradient (straight-through estimator)."""
    return images + ((images * levels).round() / levels - images).detach()


class ClipPreprocess:
    """Torch version of ``CLIPImageProcessor`` on [0,1] float images: resize, centre crop, normalise.

    The processor's rescale by 1/255 is the uint8 -> [0,1] step, done by the
    caller. The resize is separable, width then height, clamped to [0,1] after
    each pass, as PIL and torch's uint8 kernel (the processor's CPU path) do:
    they keep the intermediate image in uint8, and without the middle clamp
    bicubic overshoot on high-contrast content moves pixels by up to 21/255.
    With ``quantize`` (default), the input and both passes are also rounded to
    uint8 levels straight-through, so the value is the reference score of the
    image saved as uint8 while the gradient is that of the float path.
    """

    def __init__(self, image_processor, *, quantize: bool = True):
        ip = image_processor
        self.size = ip.size if ip.do_resize else None
        self.mode = _interpolation_mode(ip.resample)
        self.crop = (ip.crop_size["height"], ip.crop_size["width"]) if ip.do_center_crop else None
        mean, std = (ip.image_mean, ip.image_std) if ip.do_normalize else ([0.0] * 3, [1.0] * 3)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.quantize = quantize

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step."""
        if self.size.get("shortest_edge"):
            return shortest_edge_size(height, width, self.size["shortest_edge"])
        if self.size.get("height") and self.size.get("width"):
            return self.size["height"], self.size["width"]
        raise ReNegError(f"unsupported resize setting {dict(self.size)} in the reward's processor")

    def _store(self, images: torch.Tensor) -> torch.Tensor:
        """What storing in uint8 does: clamp to [0,1], and round straight-through when quantizing."""
        images = images.clamp(0.0, 1.0)
        return straight_through_quantize(images) if self.quantize else images

    def _resize_pass(self, images: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if (height, width) == tuple(images.shape[-2:]):
            return images
        antialias = self.mode in ANTIALIASED_MODES
        return self._store(F.interpolate(images, size=(height, width), mode=self.mode, antialias=antialias))

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize with the processor's filter (antialiased), horizontal pass then vertical, as PIL."""
        height, width = self.output_size(*images.shape[-2:])
        images = self._resize_pass(images, images.shape[-2], width)
        return self._resize_pass(images, height, width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0,1] -> pixel values ``(x - mean) / std`` at the model's input size (float32)."""
        images = self._store(images.float())
        if self.size is not None:
            images = self.resize(images)
        if self.crop is not None:
            images = center_crop(images, *self.crop)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)


def projected_features(output) -> torch.Tensor:
    """Projected embeddings from ``get_image_features``/``get_text_features``.

    transformers < 5 returns the tensor; v5 returns a ``BaseModelOutputWithPooling``
    whose ``pooler_output`` holds the projected features.
    """
    if isinstance(output, torch.Tensor):
        return output
    features = getattr(output, "pooler_output", None)
    if features is None:
        raise TypeError(f"cannot find projected features in {type(output).__name__}")
    return features


class ClipReward(FrozenModelReward):
    """``scale * cos(E_img(x), E_txt(p))``: normalised projected CLIP features, ``scale`` fixed or ``exp(logit_scale)``."""

    def __init__(
        self, model: CLIPModel, processor: CLIPProcessor, *, scale: float | None = None, quantize: bool = True
    ):
        self.model = freeze(model)
        self.tokenizer = processor.tokenizer
        self.preprocess = ClipPreprocess(processor.image_processor, quantize=quantize)
        self.scale = scale
        self._text_cache: tuple[tuple[str, ...], torch.Tensor] | None = None

    def score_scale(self) -> torch.Tensor:
        """PickScore's learned temperature ``exp(logit_scale)``, or the fixed CLIPScore scale."""
        if self.scale is None:
            return self.model.logit_scale.exp().float()
        return torch.tensor(self.scale, device=self.device)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings ``(B, D)`` (float32), cached for the last prompt list."""
        key = tuple(prompts)
        if self._text_cache is None or self._text_cache[0] != key:
            tokens = self.tokenizer(
                list(key), padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
            ).to(self.device)
            output = self.model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
            self._text_cache = (key, F.normalize(projected_features(output).float(), dim=-1))
        return self._text_cache[1]

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``(B, D)`` (float32) of [0,1] images, differentiable."""
        pixels = self.preprocess(images.to(self.device)).to(self.dtype)
        return F.normalize(projected_features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        cosine = (self.image_embeds(images) * self.text_embeds(prompts)).sum(dim=-1)
        return as_scores(self.score_scale() * cosine, images)


def _has_processor(directory: str) -> bool:
    return any((Path(directory) / name).is_file() for name in PROCESSOR_FILES)


def load_clip(
    model: str, *, fallback_processor: str | None = None, device: torch.device, dtype: torch.dtype
) -> tuple[CLIPModel, CLIPProcessor]:
    """Load a frozen ``CLIPModel`` and its ``CLIPProcessor`` (from ``fallback_processor`` if the model has none)."""
    model_dir = hub.resolve(model, what="reward model")
    processor_dir = model_dir
    if not _has_processor(model_dir):
        if fallback_processor is None:
            raise ReNegError(f"reward model '{model}' has no processor ({' or '.join(PROCESSOR_FILES)})")
        processor_dir = hub.resolve(fallback_processor, what="reward processor")
    try:
        clip = CLIPModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        processor = CLIPProcessor.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ReNegError(f"cannot load '{model}' as a CLIP reward model: {error}") from None
    return freeze(clip.to(device)), processor


@register_reward("pickscore", default_model=PICKSCORE_MODEL,
                 description="PickScore (Kirstain et al. 2023): exp(logit_scale) * cos(image, text) of a CLIP-H")
def pickscore(model: str | None, *, device: torch.device, dtype: torch.dtype) -> ClipReward:
    """PickScore = ``exp(logit_scale) * cos(img, txt)``, as the reference ``calc_probs`` of yuvalkirstain/PickScore."""
    clip, processor = load_clip(model or PICKSCORE_MODEL, fallback_processor=PICKSCORE_PROCESSOR,
                                device=device, dtype=dtype)
    return ClipReward(clip, processor)


@register_reward("clip-score", default_model=CLIP_SCORE_MODEL,
                 description="CLIPScore: 100 * cos(image, text) of OpenAI CLIP ViT-L/14, unclamped")
def clip_score(model: str | None, *, device: torch.device, dtype: torch.dtype) -> ClipReward:
    """CLIPScore ``100 * cos(img, txt)``; torchmetrics' CLIPScore also clamps at 0, which we omit (it kills the gradient)."""
    clip, processor = load_clip(model or CLIP_SCORE_MODEL, device=device, dtype=dtype)
    return ClipReward(clip, processor, scale=CLIP_SCORE_SCALE)
