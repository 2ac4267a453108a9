"""What the video families share: 5-D latents (B, C, F, h, w), per-frame decoding, frames in [0, 1] (B, F, 3, H, W).

Not a family itself: :mod:`.animatediff` and :mod:`.text_to_video` register the pipelines. The number of
frames is the family's ``num_frames`` (the pipelines' default, 16), set by ``condition_on(num_frames=N)``.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ReNegError
from .sd import StableDiffusionFamily

#: diffusers' default ``num_frames`` of AnimateDiffPipeline and TextToVideoSDPipeline.
DEFAULT_NUM_FRAMES = 16


class VideoFamily(StableDiffusionFamily):
    """A CLIP-conditioned video UNet with DDIM: the SD family's text side, video latents and decoding."""

    is_video = True
    attention_guidance = None  # NAG not yet: untested on the motion UNet's folded frames

    def __init__(self, pipe):
        super().__init__(pipe)
        self.num_frames = DEFAULT_NUM_FRAMES

    def condition_on(self, *, control_image=None, num_frames: int | None = None) -> None:
        super().condition_on(control_image=control_image)  # refuses a control image
        if num_frames is not None:
            if num_frames < 1:
                raise ReNegError(f"--num-frames must be >= 1, got {num_frames}")
            self.num_frames = num_frames

    @property
    def default_resolution(self) -> int:
        size = self.pipe.unet.config.sample_size
        return (size[0] if isinstance(size, (list, tuple)) else size) * self.pipe.vae_scale_factor

    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_T (B, C, F, h, w) drawn as the pipelines' ``prepare_latents``."""
        side = resolution // self.pipe.vae_scale_factor
        shape = (batch_size, self.pipe.unet.config.in_channels, self.num_frames, side, side)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        return latents * self.scheduler.init_noise_sigma

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames (B, F, 3, H, W) in [0, 1], each decoded by the VAE as ``decode_latents`` does; differentiable."""
        batch, channels, frames, height, width = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        images = super().decode(flat)
        return images.reshape(batch, frames, *images.shape[1:])
