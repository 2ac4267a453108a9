"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, ``encoder_hidden_states``, 4-channel latents, DDPM schedule."""

from __future__ import annotations

import torch

from ..core.family import Family, TextConditioning
from ..core.guidance import predict_x0
from ..core.sampling import decode, initial_latents
from .base import register_family


@torch.no_grad()
def null_text(tokenizer, text_encoder) -> torch.Tensor:
    """The text encoder's output for ``""``, ``(L, D)`` fp32 on the CPU: diffusers' default negative.

    Computed exactly as ``StableDiffusionPipeline.encode_prompt`` does for
    ``negative_prompt=""`` (or None): tokenized with padding to
    ``tokenizer.model_max_length``, attention mask passed only when
    ``text_encoder.config.use_attention_mask``, and the last hidden state
    ``text_encoder(ids)[0]`` taken, with no ``clip_skip`` (diffusers applies it
    to the prompt only, never to the negative).
    """
    inputs = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    device = text_encoder.device
    use_mask = getattr(text_encoder.config, "use_attention_mask", False)
    attention_mask = inputs.attention_mask.to(device) if use_mask else None
    hidden = text_encoder(inputs.input_ids.to(device), attention_mask=attention_mask)[0]
    return hidden[0].to(device="cpu", dtype=torch.float32)


@register_family
class StableDiffusionFamily(Family):
    """SD1.x / SD2.x (``StableDiffusionPipeline``), epsilon or v prediction, with DDIM."""

    name = "sd"
    attention_guidance = "cross"
    pipeline_classes = ("StableDiffusionPipeline",)
    description = "SD1.x, SD2.x"

    def use_sampler(self) -> None:
        """DDIM with the checkpoint's own schedule and prediction type (what ReNeg trains and samples with)."""
        from diffusers import DDIMScheduler

        self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)

    @property
    def model(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def default_resolution(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextConditioning:
        embeds, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, do_classifier_free_guidance=False)
        return TextConditioning(embeds)

    def null_text(self) -> TextConditioning:
        return TextConditioning(null_text(self.pipe.tokenizer, self.pipe.text_encoder).unsqueeze(0))

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        return {"encoder_hidden_states": text.embeds}

    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        return initial_latents(batch_size, unet=self.pipe.unet, scheduler=self.scheduler,
                               vae_scale_factor=self.pipe.vae_scale_factor, height=resolution, width=resolution,
                               generator=generator, device=self.device, dtype=self.dtype)

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return predict_x0(model_output, x_t, self.scheduler.alphas_cumprod[t.long().cpu()],
                          prediction_type=self.scheduler.config.prediction_type)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode(self.pipe.vae, latents)
