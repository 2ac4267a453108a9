"""The family protocol: what the rollout needs from a loaded pipeline (``reneg.families`` implements it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
import torch.utils.checkpoint

from ..errors import ReNegError


@dataclass
class TextConditioning:
    """Text-encoder outputs of one branch, batched: what a negative embedding replaces.

    Args:
        embeds: the sequence embedding, (B, L, D) (``prompt_embeds`` / ``negative_prompt_embeds``).
        pooled: a pooled embedding (B, P) where the family has one (SDXL, SD3), else None.
        mask: an attention mask (B, L) where the family uses one (PixArt), else None.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @classmethod
    def of(cls, negative) -> TextConditioning:
        """A one-row conditioning from a negative: a TextConditioning, an (L, D) or (1, L, D) tensor, or a
        :class:`~reneg.embedding.NegativeEmbedding` (with its pooled part, where it has one)."""
        if isinstance(negative, cls):
            return negative
        if torch.is_tensor(negative):
            return cls(negative if negative.dim() == 3 else negative.unsqueeze(0))
        pooled = getattr(negative, "pooled", None)
        return cls(negative.tensor.unsqueeze(0), None if pooled is None else pooled.unsqueeze(0))

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def expand(self, batch_size: int) -> TextConditioning:
        """One row repeated for a batch (an ``expand`` view, no copy); a batch of ``batch_size`` is returned as is."""
        if len(self) == batch_size:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand a batch of {len(self)} text conditionings to {batch_size}")

        def grow(tensor):
            return None if tensor is None else tensor.expand(batch_size, *tensor.shape[1:])

        return replace(self, embeds=grow(self.embeds), pooled=grow(self.pooled), mask=grow(self.mask))

    def to(self, device=None, dtype=None) -> TextConditioning:
        """Moved to ``device``; floating tensors cast to ``dtype`` (masks keep theirs)."""

        def move(tensor):
            if tensor is None:
                return None
            return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)

        return replace(self, embeds=move(self.embeds), pooled=move(self.pooled), mask=move(self.mask))


def unmasked(text: TextConditioning) -> TextConditioning:
    """The same text with every token attended (no mask), for a file that stores no mask (PixArt's null text).

    Each row's attended tokens are repeated in turn over all L positions: cross-attention then gives the same
    output as the masked text, exactly when the attended count divides L (softmax weights of k tokens each
    repeated L/k times are unchanged), as for the null text ``""`` (its one EOS token)."""
    if text.mask is None:
        return text
    rows = []
    for embeds, mask in zip(text.embeds, text.mask):
        attended = embeds[mask.bool()]
        rows.append(attended[torch.arange(embeds.shape[0]) % len(attended)])
    return replace(text, embeds=torch.stack(rows), mask=None)


class WrappedDenoiser(torch.nn.Module):
    """A module that puts a network behind the denoiser's ``model(x, t, **conditioning)`` call (a transformer,
    a ControlNet + UNet): its ``dtype``, ``device`` and ``config`` are those of ``network``, and so is its peft
    adapter API (NPO's adapters sit on the network)."""

    _ADAPTER_API = frozenset({"peft_config", "add_adapter", "delete_adapters", "enable_adapters", "disable_adapters",
                              "set_adapters", "active_adapters"})

    def __getattr__(self, name):
        if name in WrappedDenoiser._ADAPTER_API:
            return getattr(self.network, name)
        return super().__getattr__(name)

    @property
    def network(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def config(self):
        return self.network.config


class Family:
    """One loaded pipeline seen through what the rollout needs.

    Subclasses set ``name`` and ``pipeline_classes`` and implement the methods;
    :func:`register_family` makes :func:`family_for` find them.
    """

    name: str = ""
    pipeline_classes: tuple[str, ...] = ()
    description: str = ""
    #: the pipeline attributes holding the text encoders a negative embedding belongs to, in order
    text_encoder_names: tuple[str, ...] = ("text_encoder",)
    #: the sampler the rollout steps with, as recorded in generation.json and results.json
    sampler: str = "DDIM"
    #: how NAG (:mod:`reneg.core.nag`) reaches the text in this family's model: ``"cross"`` (a UNet's
    #: cross-attention), ``"joint"`` (an MM-DiT's joint attention), or None (NAG is refused)
    attention_guidance: str | None = None

    def __init__(self, pipe):
        self.pipe = pipe

    def use_sampler(self) -> None:
        """Put the family's sampler (the scheduler the rollout steps with) on the pipeline."""

    def condition_on(self, *, control_image=None, num_frames: int | None = None) -> None:
        """Inputs beside the text that every output is conditioned on: a ControlNet's control image, a video's
        number of frames. Families that take none refuse them in one line; those that need one refuse its absence.
        """
        if control_image is not None:
            raise ReNegError(f"--control-image applies to ControlNet pipelines only; this model is a "
                             f"{type(self.pipe).__name__}: drop --control-image or load a ControlNet pipeline")
        if num_frames is not None:
            raise ReNegError(f"--num-frames applies to video pipelines only; this model is a "
                             f"{type(self.pipe).__name__}: drop --num-frames")

    #: Set by :meth:`enable_gradient_checkpointing`: :meth:`decode_with_grad` decodes one sample at a time.
    checkpointed_decode: bool = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoiser's and the VAE's activations in the backward pass: memory for time (training at
        SDXL's and SD3's 1024 px). The text encoders are outside the gradient's path and stay as they are."""
        for name in ("unet", "transformer", "vae"):
            module = getattr(self.pipe, name, None)
            if module is not None and getattr(module, "_supports_gradient_checkpointing", False):
                module.enable_gradient_checkpointing()
        self.checkpointed_decode = True

    # -- the parts the sampler uses
    @property
    def model(self) -> torch.nn.Module:
        """The denoising network (a UNet or a transformer)."""
        raise NotImplementedError

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def default_resolution(self) -> int:
        raise NotImplementedError

    def resolution_of(self, latents: torch.Tensor) -> int:
        """The image size in pixels that latents of this shape decode to."""
        return latents.shape[-1] * self.pipe.vae_scale_factor

    def set_timesteps(self, steps: int, *, resolution: int, device: torch.device | str | None = None) -> None:
        """Set the sampler's schedule of ``steps`` steps for images of ``resolution`` pixels (what the pipeline's
        ``retrieve_timesteps`` does): ``scheduler.set_timesteps(steps)`` here; FLUX shifts it by the image size."""
        self.scheduler.set_timesteps(steps, device=device)

    # -- text
    def encode(self, prompts: list[str]) -> TextConditioning:
        """Text conditioning of ``prompts`` exactly as the pipeline's own ``encode_prompt`` makes it."""
        raise NotImplementedError

    def warn_if_truncated(self, prompts: list[str]) -> None:
        """Say once, on reneg's log, how many ``prompts`` are longer than the (first) tokenizer reads: the text
        encoder sees them cut there, as in diffusers' pipelines (whose own warning reneg's logging hides)."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not isinstance(limit, int) or limit > 4096 or not prompts:
            return
        distinct = sorted(set(prompts))
        lengths = [len(ids) for ids in tokenizer(distinct, truncation=False, padding=False).input_ids]
        long = [p for p, n in zip(distinct, lengths) if n > limit]
        if long:
            logging.getLogger("reneg").warning(
                "%d of %d prompts are longer than the text encoder reads (%d tokens) and are cut there, as "
                "diffusers does: e.g. '%s...'", len(long), len(distinct), limit, long[0][:60])

    def null_text(self) -> TextConditioning:
        """The conditioning of the empty prompt as diffusers' default negative (one row, fp32, CPU)."""
        raise NotImplementedError

    def text_encoders(self) -> list[torch.nn.Module]:
        """The pipeline's text encoders (those of ``text_encoder_names`` it has), in order."""
        return [e for e in (getattr(self.pipe, name, None) for name in self.text_encoder_names) if e is not None]

    def fingerprint(self) -> str:
        """The text encoders' fingerprint (:func:`reneg.core.fingerprint.combined_fingerprint`), as embedding files hold
        it."""
        from .fingerprint import combined_fingerprint

        return combined_fingerprint(self.text_encoders())

    def negative_shape(self) -> tuple[tuple[int, int], int | None]:
        """((L, D), P): the shape of a negative embedding for this pipeline and of its pooled part (None: none)."""
        null = self.null_text()
        return tuple(null.embeds.shape[1:]), None if null.pooled is None else int(null.pooled.shape[-1])

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        """The model's keyword arguments for one branch (``encoder_hidden_states``, ``added_cond_kwargs``, ...)."""
        raise NotImplementedError

    # -- latents
    def initial_latents(self, batch_size: int, *, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_T drawn exactly as the pipeline's ``prepare_latents`` (the contract's ``--seed``)."""
        raise NotImplementedError

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The one-step prediction of x0 at t (ReNeg Eq. 6 for the DDPM family)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [0, 1], differentiable."""
        raise NotImplementedError

    def decode_with_grad(self, latents: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` in a gradient window; with gradient checkpointing on, see :func:`decode_per_sample`."""
        if self.checkpointed_decode:
            return decode_per_sample(self.decode, latents)
        return self.decode(latents)


def decode_per_sample(decode, latents: torch.Tensor) -> torch.Tensor:
    """``decode(latents)`` one sample at a time, each checkpointed: the backward pass holds one sample's decoder
    activations instead of the batch's.

    The VAE's own block checkpointing keeps each block's input for the whole batch, and at 512² and more those
    are the step's largest tensors (SD1.5 size, bf16, batch 8: 14.4 GiB for the grad step with block
    checkpointing alone, 3.8 GiB with this; ``benchmarks/memory_estimate.py``). The price is one more decoder
    forward; the images equal the batched decode's up to float rounding.
    """
    if len(latents) == 1:
        return decode(latents)
    return torch.cat([torch.utils.checkpoint.checkpoint(decode, sample, use_reentrant=False)
                      for sample in latents.split(1)])
