"""Degradations at the latent's scale: each one survives an 8x VAE (a pixel-level one would not).

An 8x VAE erases pixel noise and light blur, so the world uses heavy blur,
low-frequency colour blotches, and global contrast / brightness shifts. Each
function takes a batch (B, 3, H, W) in [0, 1] and draws its per-image
strengths from ``generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(batch: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return (low + (high - low) * torch.rand(batch, generator=generator)).view(-1, 1, 1, 1)


def blurry(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Heavy Gaussian blur, sigma 4-5.5 px (reflect padding): a sigma 2.5-3.5 blur did not survive the VAE."""
    radius = 16
    sigma = _uniform(len(images), 4.0, 5.5, generator).view(-1, 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-x**2 / (2 * sigma**2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(3, dim=0)  # (3B, K)
    b, c, h, w = images.shape
    flat = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernels.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernels.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def blotchy(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency colour blotches: a 6x6 noise field, bicubically upsampled, amplitude 0.18-0.26."""
    noise = torch.randn(len(images), 3, 6, 6, generator=generator) * _uniform(len(images), 0.18, 0.26, generator)
    return images + F.interpolate(noise, size=images.shape[-2:], mode="bicubic", align_corners=False)


def low_contrast(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Contrast squeezed to 25-40% around each image's mean."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (images - mean) * _uniform(len(images), 0.25, 0.4, generator)


def washed_out(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Faded towards white: 50-65% white."""
    white = _uniform(len(images), 0.5, 0.65, generator)
    return images * (1 - white) + white


def dark(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Underexposed: 25-40% of the brightness."""
    return images * _uniform(len(images), 0.25, 0.4, generator)


DEGRADE = {"blurry": blurry, "blotchy": blotchy, "low contrast": low_contrast, "washed out": washed_out, "dark": dark}


def apply(images: torch.Tensor, degradations: list[tuple[str, ...]], generator: torch.Generator) -> torch.Tensor:
    """Degrade each image (B, 3, H, W) in [0, 1] by its own tuple of degradation names, batched by kind."""
    images = images.clone()
    for name, degrade in DEGRADE.items():
        index = torch.tensor([i for i, names in enumerate(degradations) if name in names], dtype=torch.long)
        if len(index):
            images[index] = degrade(images[index], generator)
    return images.clamp(0, 1)
