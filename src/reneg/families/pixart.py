"""PixArt-alpha (``PixArtAlphaPipeline``): a T5 encoder (120 tokens, with an attention mask) and a DiT.

The negative branch carries its own attention mask (``TextConditioning.mask``):
the null text's is the tokenizer's; a negative embedding without one (a learned
file, the ReNeg authors' released ``(1, 120, 4096)``) attends to all its tokens,
which is what diffusers needs as ``negative_prompt_attention_mask`` for it. The
transformer's learned-sigma half is dropped per branch (a linear split, so it
commutes with the guidance rule that diffusers applies first).
"""

from __future__ import annotations

import torch

from ..core.family import TextConditioning, WrappedDenoiser
from ..core.sampling import initial_latents
from .base import register_family
from .sd import StableDiffusionFamily

#: diffusers' ``max_sequence_length`` of PixArt-alpha (the released embedding's L).
TEXT_LENGTH = 120


class PixArtDenoiser(WrappedDenoiser):
    """``PixArtTransformer2DModel`` behind the denoiser's ``(x, t, **conditioning)``, as the pipeline calls it."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    @property
    def network(self) -> torch.nn.Module:
        return self.transformer

    def forward(self, sample, timestep, *, encoder_hidden_states, encoder_attention_mask, added_cond_kwargs,
                return_dict=False):
        timestep = timestep.reshape(-1)[:1].to(sample.device).expand(sample.shape[0])
        output = self.transformer(sample, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                                  encoder_attention_mask=encoder_attention_mask,
                                  added_cond_kwargs=added_cond_kwargs, return_dict=False)[0]
        if self.transformer.config.out_channels // 2 == sample.shape[1]:  # learned sigma: keep the noise half
            output = output.chunk(2, dim=1)[0]
        return (output,)


@register_family
class PixArtAlphaFamily(StableDiffusionFamily):
    """PixArt-alpha: T5 text (L = 120, masked), DiT denoiser, epsilon prediction, DDIM."""

    name = "pixart-alpha"
    attention_guidance = None  # NAG not yet: its text comes with an attention mask
    pipeline_classes = ("PixArtAlphaPipeline",)
    description = "PixArt-alpha (T5, 120 tokens)"
    text_length = TEXT_LENGTH

    def __init__(self, pipe):
        super().__init__(pipe)
        self._model = PixArtDenoiser(pipe.transformer)

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def default_resolution(self) -> int:
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextConditioning:
        embeds, mask, _, _ = self.pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                     device=self.device, clean_caption=False,
                                                     max_sequence_length=self.text_length)
        return TextConditioning(embeds, mask=mask)

    def null_text(self) -> TextConditioning:
        """``""`` with its mask, as the pipeline's default negative (one row, fp32, CPU)."""
        return self.encode([""]).to("cpu", torch.float32)

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        batch, length = text.embeds.shape[:2]
        mask = text.mask if text.mask is not None else torch.ones(batch, length, dtype=torch.long)
        added = {"resolution": None, "aspect_ratio": None}
        if self.pipe.transformer.config.sample_size == 128:  # PixArt-alpha 1024: micro-conditions
            added = {"resolution": torch.tensor([[resolution, resolution]], dtype=torch.float32).repeat(batch, 1),
                     "aspect_ratio": torch.ones(batch, 1)}
        return {"encoder_hidden_states": text.embeds, "encoder_attention_mask": mask.to(text.embeds.device),
                "added_cond_kwargs": added}

    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        return initial_latents(batch_size, unet=self.pipe.transformer, scheduler=self.scheduler,
                               vae_scale_factor=self.pipe.vae_scale_factor, height=resolution, width=resolution,
                               generator=generator, device=self.device, dtype=self.dtype)
