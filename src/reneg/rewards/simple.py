"""Model-free rewards for demos and tests: contrast, saturation and a fixed random linear scorer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import ReNegError
from .base import as_scores, check_inputs, register_reward

#: ITU-R BT.601 luma weights of R, G, B (PIL's "L" conversion).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Keeps sqrt and division differentiable at flat or black images.
EPS = 1e-8
#: Side of the average-pooled grid the random linear scorer reads.
RANDOM_LINEAR_GRID = 16
RANDOM_LINEAR_SEED = 0


def luminance(images: torch.Tensor) -> torch.Tensor:
    """``Y = 0.299 R + 0.587 G + 0.114 B`` of ``(B,3,H,W)`` images, shape ``(B,H,W)``."""
    weights = torch.tensor(LUMA_WEIGHTS, device=images.device, dtype=images.dtype)
    return torch.einsum("bchw,c->bhw", images, weights)


def contrast(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """RMS contrast: per-image standard deviation of the luminance, ``sqrt(Var[Y] + eps)``."""
    check_inputs(images, prompts)
    y = luminance(images.float()).flatten(1)
    return as_scores(torch.sqrt(y.var(dim=1, unbiased=False) + EPS), images)


def saturation(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Mean HSV saturation ``(max_c - min_c) / max_c`` over pixels (0 for black pixels)."""
    check_inputs(images, prompts)
    x = images.float()
    high, low = x.amax(dim=1), x.amin(dim=1)
    return as_scores(((high - low) / (high + EPS)).flatten(1).mean(dim=1), images)


class RandomLinear:
    """A fixed random scorer ``w . avgpool16(x) / sqrt(d)``, ``w ~ N(0, I)`` drawn from a fixed seed."""

    def __init__(self, *, seed: int = RANDOM_LINEAR_SEED, device: torch.device, dtype: torch.dtype):
        generator = torch.Generator().manual_seed(seed)
        dim = 3 * RANDOM_LINEAR_GRID**2
        self.weight = (torch.randn(dim, generator=generator) / dim**0.5).to(device=device, dtype=dtype)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        x = images.to(device=self.weight.device, dtype=self.weight.dtype)
        pooled = F.adaptive_avg_pool2d(x, RANDOM_LINEAR_GRID).flatten(1)
        return as_scores(pooled @ self.weight, images)


def _no_model(name: str, model: str | None) -> None:
    if model is not None:
        raise ReNegError(f"reward '{name}' uses no model, got model '{model}'")


@register_reward("contrast", description="RMS contrast (std of luminance); no model")
def contrast_reward(model: str | None, *, device: torch.device, dtype: torch.dtype):
    """The :func:`contrast` reward."""
    _no_model("contrast", model)
    return contrast


@register_reward("saturation", description="mean HSV saturation; no model")
def saturation_reward(model: str | None, *, device: torch.device, dtype: torch.dtype):
    """The :func:`saturation` reward."""
    _no_model("saturation", model)
    return saturation


@register_reward("random-linear", description="fixed random linear scorer of a 16x16 pooled image (tests)")
def random_linear_reward(model: str | None, *, device: torch.device, dtype: torch.dtype) -> RandomLinear:
    """The :class:`RandomLinear` reward with the fixed seed."""
    _no_model("random-linear", model)
    return RandomLinear(device=device, dtype=dtype)
