"""OpenAI ``clip.load``'s image transform in torch, for rewards whose reference uses it (aesthetic, ImageReward, A&E).

The reference is torchvision ``Compose([Resize(n, BICUBIC), CenterCrop(n),
convert("RGB"), ToTensor(), Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])`` on
a PIL image. It differs from ``CLIPImageProcessor`` only in the crop offset:
torchvision rounds ``(H - n) / 2`` half to even, transformers floors it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .clip import ClipPreprocess


def torchvision_center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre ``height x width`` crop at torchvision's offsets ``int(round((H - h) / 2))`` (half to even)."""
    top = int(round((images.shape[-2] - height) / 2.0))
    left = int(round((images.shape[-1] - width) / 2.0))
    return images[..., top : top + height, left : left + width]


class ClipLoadPreprocess(ClipPreprocess):
    """``clip.load``'s transform of [0,1] ``(B,3,H,W)``: short side to ``image_size`` (bicubic), centre crop, normalise.

    The resize is :class:`ClipPreprocess`'s PIL-faithful separable bicubic
    (uint8 storage between passes, straight-through rounding with ``quantize``).
    """

    def __init__(self, image_size: int, *, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, quantize: bool = True):
        settings = SimpleNamespace(
            do_resize=True, size={"shortest_edge": image_size}, resample=Image.Resampling.BICUBIC,
            do_center_crop=True, crop_size={"height": image_size, "width": image_size},
            do_normalize=True, image_mean=list(mean), image_std=list(std),
        )
        super().__init__(settings, quantize=quantize)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = self.resize(self._store(images.float()))
        images = torchvision_center_crop(images, *self.crop)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)
