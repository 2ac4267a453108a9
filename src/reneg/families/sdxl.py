"""Stable Diffusion XL: two CLIP text encoders, a pooled embedding and the added time ids, with DDIM.

The negative of one branch is what diffusers' ``StableDiffusionXLPipeline`` takes as
``negative_prompt_embeds`` (B, 77, 768 + 1280: both encoders' penultimate hidden
states, concatenated) and ``negative_pooled_prompt_embeds`` (B, 1280: the second
encoder's projected output). Each branch carries its own ``added_cond_kwargs``
(``text_embeds`` = its pooled embedding, ``time_ids``), which the guided denoiser
concatenates across branches as the pipeline does.
"""

from __future__ import annotations

import torch

from ..core.family import Family, TextConditioning
from ..core.guidance import predict_x0
from ..core.sampling import initial_latents
from .base import register_family


@register_family
class StableDiffusionXLFamily(Family):
    """SDXL (``StableDiffusionXLPipeline``), epsilon or v prediction, sampled with DDIM from its own schedule."""

    name = "sdxl"
    attention_guidance = "cross"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    description = "SDXL"
    text_encoder_names = ("text_encoder", "text_encoder_2")

    def use_sampler(self) -> None:
        """DDIM from the pipeline's scheduler config (SDXL ships Euler; ReNeg trains and samples with DDIM)."""
        from diffusers import DDIMScheduler

        self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)

    @property
    def model(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def default_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    # -- text
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextConditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        return TextConditioning(embeds, pooled)

    @torch.no_grad()
    def null_text(self) -> TextConditioning:
        """diffusers' default negative: ``encode_prompt`` with ``negative_prompt=None``.

        That is zeros of both shapes when the pipeline's ``force_zeros_for_empty_prompt``
        is set (SDXL-base-1.0), else both encoders' outputs for ``""`` (penultimate
        hidden states concatenated; the pooled output of the second encoder).
        """
        _, negative, _, negative_pooled = self.pipe.encode_prompt(
            "", device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None)
        return TextConditioning(negative[:1], negative_pooled[:1]).to("cpu", torch.float32)

    def time_ids(self, resolution: int, dtype: torch.dtype) -> torch.Tensor:
        """SDXL's micro-conditioning as the pipeline's defaults make it: original size, crop (0, 0), target size."""
        return torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=dtype)

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        time_ids = self.time_ids(resolution, text.embeds.dtype).to(text.embeds.device)
        return {"encoder_hidden_states": text.embeds,
                "added_cond_kwargs": {"text_embeds": text.pooled, "time_ids": time_ids.repeat(len(text), 1)}}

    # -- latents
    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        return initial_latents(batch_size, unet=self.pipe.unet, scheduler=self.scheduler,
                               vae_scale_factor=self.pipe.vae_scale_factor, height=resolution, width=resolution,
                               generator=generator, device=self.device, dtype=self.dtype)

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return predict_x0(model_output, x_t, self.scheduler.alphas_cumprod[t.long().cpu()],
                          prediction_type=self.scheduler.config.prediction_type)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to [0, 1] as the pipeline decodes: an fp16 VAE with ``force_upcast`` decodes in fp32.

        diffusers casts the VAE to fp32 for each decode and back; reneg keeps it in fp32
        from the first decode on (the same numbers, no cast per call). ``latents_mean`` /
        ``latents_std`` in the VAE config are honoured as the pipeline does.
        """
        vae = self.pipe.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)
        if vae.dtype == torch.float32:
            latents = latents.float()
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        images = images.to(torch.promote_types(images.dtype, torch.float32))
        return (images / 2 + 0.5).clamp(0, 1)
