"""Assemble the world's tiny Stable Diffusion as a standard diffusers pipeline."""

from __future__ import annotations

from diffusers import DDIMScheduler, StableDiffusionPipeline

from ..models.tiny import SD_SCHEDULER


def assemble_pipeline(*, vae, text_encoder, unet, tokenizer, prediction_type: str = "epsilon"
                      ) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` (DDIM with SD's betas), loadable with ``from_pretrained``."""
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
