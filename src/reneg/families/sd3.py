"""Stable Diffusion 3 / 3.5: three text encoders, an MM-DiT transformer and rectified flow matching.

The negative of one branch is what diffusers' ``StableDiffusion3Pipeline`` takes as
``negative_prompt_embeds`` (B, 77 + 256, 4096: CLIP-L and CLIP-G penultimate states
concatenated and zero-padded to T5's width, then T5-XXL's 256 tokens) and
``negative_pooled_prompt_embeds`` (B, 768 + 1280). Sampling steps the pipeline's own
``FlowMatchEulerDiscreteScheduler``; the one-step prediction is x0 = x_t - sigma_t * v
(:func:`reneg.core.guidance.predict_x0_flow`), and the grad window covers the last K of its sigmas.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..core.family import TextConditioning
from ..errors import ReNegError
from .base import register_family
from .flow import FlowMatchingFamily, TransformerWrapper

#: ``StableDiffusion3Pipeline.__call__``'s default T5 sequence length.
MAX_SEQUENCE_LENGTH = 256


class TransformerDenoiser(TransformerWrapper):
    """``SD3Transformer2DModel`` behind the UNet's call ``model(x, t, **conditioning)`` of the guided denoiser.

    The timestep is broadcast to the batch as the pipeline does (``t.expand(B)``).
    """

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, return_dict: bool = False):
        return self.transformer(hidden_states=x, timestep=t.expand(x.shape[0]),
                                encoder_hidden_states=encoder_hidden_states, pooled_projections=pooled_projections,
                                return_dict=return_dict)


@register_family
class StableDiffusion3Family(FlowMatchingFamily):
    """SD3 / SD3.5 (``StableDiffusion3Pipeline``): flow matching with ``FlowMatchEulerDiscreteScheduler``."""

    name = "sd3"
    denoiser = TransformerDenoiser
    attention_guidance = "joint"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    description = "SD3, SD3.5"
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    sampler = "FlowMatchEuler"

    def use_sampler(self) -> None:
        """A fresh ``FlowMatchEulerDiscreteScheduler`` from the pipeline's config (the pipeline's own sampler)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        config = self.pipe.scheduler.config
        if config.get("use_dynamic_shifting", False):
            raise ReNegError("this SD3 checkpoint's scheduler uses dynamic shifting (mu from the image size), which "
                             "reneg does not step yet: use a checkpoint with a fixed shift (SD3-medium, SD3.5)")
        self.pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)

    @property
    def default_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    # -- text
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextConditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            list(prompts), None, None, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH)
        return TextConditioning(embeds, pooled)

    @torch.no_grad()
    def null_text(self) -> TextConditioning:
        """diffusers' default negative: ``encode_prompt`` with ``negative_prompt=None``, i.e. ``""`` through all
        three encoders (zeros in T5's place when the pipeline has no ``text_encoder_3``)."""
        _, negative, _, negative_pooled = self.pipe.encode_prompt(
            "", None, None, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=None, max_sequence_length=MAX_SEQUENCE_LENGTH)
        return TextConditioning(negative[:1], negative_pooled[:1]).to("cpu", torch.float32)

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        return {"encoder_hidden_states": text.embeds, "pooled_projections": text.pooled}

    # -- latents
    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_T as ``StableDiffusion3Pipeline.prepare_latents``: standard normal, not scaled (sigma_max = 1)."""
        factor = self.pipe.vae_scale_factor
        shape = (batch_size, self.pipe.transformer.config.in_channels, resolution // factor, resolution // factor)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents / scaling_factor + shift_factor`` through the VAE, as the pipeline decodes."""
        from ..core.sampling import decode

        return decode(self.pipe.vae, latents)
