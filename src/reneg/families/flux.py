"""FLUX.1 (``FluxPipeline``): CLIP-L's pooled output and T5-XXL's tokens, an MM-DiT on packed 2x2 latent patches,
rectified flow matching with a resolution-dependent shift.

The negative of one branch is what ``FluxPipeline`` takes as ``negative_prompt_embeds`` (B, 512, 4096: T5's
tokens at the pipeline's ``max_sequence_length``) and ``negative_pooled_prompt_embeds`` (B, 768: CLIP-L's
pooled output). reneg's CFG with a negative branch is the pipeline's *true* CFG (``true_cfg_scale``,
``neg + s * (cond - neg)``): ``--guidance-scale`` is ``true_cfg_scale``. FLUX.1-dev's *distilled* guidance
(the ``guidance`` embedding, the pipeline's ``guidance_scale``, 3.5 by default) is a separate setting,
:attr:`FluxFamily.embedded_guidance`; FLUX.1-schnell has no such embedding (None).

The rollout's latents are the pipeline's packed tokens (B, (H/16)(W/16), 64), drawn as ``prepare_latents``
does; sampling sets the schedule as ``FluxPipeline.__call__`` (``sigmas = linspace(1, 1/T, T)``, ``mu`` from
the image's token count, through diffusers' own ``calculate_shift`` and ``retrieve_timesteps``); the one-step
prediction is x0 = x_t - sigma_t * v (:func:`reneg.core.guidance.predict_x0_flow`); decoding unpacks first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor

from ..core.family import TextConditioning
from ..errors import ReNegError
from .base import register_family
from .flow import FlowMatchingFamily, TransformerWrapper

#: ``FluxPipeline.__call__``'s default T5 sequence length (the negative's L).
MAX_SEQUENCE_LENGTH = 512
#: ``FluxPipeline.__call__``'s default ``guidance_scale``: the distilled guidance of FLUX.1-dev.
DEFAULT_EMBEDDED_GUIDANCE = 3.5


class FluxDenoiser(TransformerWrapper):
    """``FluxTransformer2DModel`` behind the denoiser's ``model(x, t, **conditioning)``, called as the pipeline's
    denoising loop calls it.

    ``x`` is packed (B, N, C) with N a square grid of 2x2 patches (reneg's images are square). The position ids
    have no batch dimension and are the same for every branch, so they are made here rather than carried per
    branch: ``txt_ids`` zeros (L, 3) as ``encode_prompt``'s, ``img_ids`` from ``_prepare_latent_image_ids``.
    The timestep is ``t / 1000`` broadcast to the batch; ``guidance`` (a float or None) is the distilled
    guidance, ``torch.full`` over the batch as the pipeline makes it.
    """

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, guidance: float | None, return_dict: bool = False):
        batch, tokens, _ = x.shape
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"packed latents of {tokens} tokens are not a square grid")
        img_ids = FluxPipeline._prepare_latent_image_ids(batch, side, side, x.device, x.dtype)
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=x.device, dtype=x.dtype)
        if guidance is not None:
            guidance = torch.full([1], guidance, device=x.device, dtype=torch.float32).expand(batch)
        return self.transformer(hidden_states=x, timestep=t.expand(batch).to(x.dtype) / 1000, guidance=guidance,
                                pooled_projections=pooled_projections, encoder_hidden_states=encoder_hidden_states,
                                txt_ids=txt_ids, img_ids=img_ids, return_dict=return_dict)


@register_family
class FluxFamily(FlowMatchingFamily):
    """FLUX.1-dev / -schnell (``FluxPipeline``): flow matching with ``FlowMatchEulerDiscreteScheduler``.

    Attributes:
        embedded_guidance: the distilled guidance fed to the transformer's guidance embedding (``FluxPipeline``'s
            ``guidance_scale``): 3.5 where the transformer has one (``guidance_embeds``, FLUX.1-dev), else None
            (FLUX.1-schnell). Set it on the family (``family_for(pipe).embedded_guidance = 2.0``) to change it.
    """

    name = "flux"
    denoiser = FluxDenoiser
    attention_guidance = "joint"
    pipeline_classes = ("FluxPipeline",)
    description = "FLUX.1-dev, FLUX.1-schnell"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    sampler = "FlowMatchEuler"

    def __init__(self, pipe):
        super().__init__(pipe)
        embeds = pipe.transformer.config.get("guidance_embeds", False)
        self.embedded_guidance: float | None = DEFAULT_EMBEDDED_GUIDANCE if embeds else None

    def use_sampler(self) -> None:
        """A fresh ``FlowMatchEulerDiscreteScheduler`` from the pipeline's config (the pipeline's own sampler)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    @property
    def default_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    @property
    def _patch(self) -> int:
        """Pixels per side of one packed token: the VAE's factor times the 2x2 patch."""
        return self.pipe.vae_scale_factor * 2

    def resolution_of(self, latents: torch.Tensor) -> int:
        return math.isqrt(latents.shape[1]) * self._patch

    def set_timesteps(self, steps: int, *, resolution: int, device: torch.device | str | None = None) -> None:
        """``FluxPipeline.__call__``'s schedule: sigmas ``linspace(1, 1/steps, steps)`` (None with
        ``use_flow_sigmas``), shifted by ``mu = calculate_shift(image_seq_len, ...)`` from the scheduler's config."""
        config = self.scheduler.config
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        mu = calculate_shift((resolution // self._patch) ** 2, config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        retrieve_timesteps(self.scheduler, steps, device, sigmas=sigmas, mu=mu)

    # -- text
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextConditioning:
        embeds, pooled, _ = self.pipe.encode_prompt(list(prompts), None, device=self.device, num_images_per_prompt=1,
                                                    max_sequence_length=MAX_SEQUENCE_LENGTH)
        return TextConditioning(embeds, pooled)

    @torch.no_grad()
    def null_text(self) -> TextConditioning:
        """``encode_prompt("")``: the negative of true CFG with ``negative_prompt=""``. ``FluxPipeline`` has no
        default negative (``negative_prompt=None`` turns true CFG off whatever ``true_cfg_scale``)."""
        embeds, pooled, _ = self.pipe.encode_prompt("", None, device=self.device, num_images_per_prompt=1,
                                                    max_sequence_length=MAX_SEQUENCE_LENGTH)
        return TextConditioning(embeds[:1], pooled[:1]).to("cpu", torch.float32)

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        return {"encoder_hidden_states": text.embeds, "pooled_projections": text.pooled,
                "guidance": self.embedded_guidance}

    # -- latents
    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_T as ``FluxPipeline.prepare_latents``: standard normal (B, C/4, H/8, W/8), then ``_pack_latents``."""
        if resolution % self._patch:
            raise ReNegError(f"FLUX images are made of {self._patch}-pixel patches: --resolution {resolution} must "
                             f"be a multiple of {self._patch}")
        channels, side = self.pipe.transformer.config.in_channels // 4, resolution // self.pipe.vae_scale_factor
        latents = randn_tensor((batch_size, channels, side, side), generator=generator, device=self.device,
                               dtype=self.dtype)
        return self.pipe._pack_latents(latents, batch_size, channels, side, side)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``_unpack_latents``, then ``latents / scaling_factor + shift_factor`` through the VAE, as the pipeline."""
        from ..core.sampling import decode

        resolution = self.resolution_of(latents)
        return decode(self.pipe.vae, self.pipe._unpack_latents(latents, resolution, resolution,
                                                               self.pipe.vae_scale_factor))
