"""The one sampler (DDIM, or a family's own scheduler such as SD3's flow-matching Euler) + CFG, shared by
training and inference.

``sample(..., grad_from=None)`` is plain inference (x_T -> x_0, no gradient).
``sample(..., grad_from=k)`` is ReNeg's training rollout: x_T -> x_t without
gradient (t = the k-th of the sampling timesteps), then one guided model call
*with* gradient giving the one-step prediction x0_pred (ReNeg Eq. 6). The
gradient reaches the negative embedding through that last call only: x_t is
detached (stop-gradient towards x_{t+1}, ..., x_T, ReNeg Sec. 4.2).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from .denoiser import Branch, GuidedDenoiser
from .guidance import predict_x0

#: (step index, timestep, latents after the step) -> None
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
#: (model output, x_t, timestep) -> x0_pred: the one-step prediction of a family
Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def CFGDenoiser(unet: torch.nn.Module, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor,  # noqa: N802
               guidance_scale: float | torch.Tensor = 7.5) -> GuidedDenoiser:
    """The SD1.x/2.x guided denoiser from (B, L, D) prompt and negative embeddings (ReNeg Eq. 5).

    A shorthand for a :class:`~reneg.core.denoiser.GuidedDenoiser` with the ``cond`` and
    ``negative`` branches conditioned by ``encoder_hidden_states``.
    """
    return GuidedDenoiser(unet, {"negative": Branch({"encoder_hidden_states": negative_embeds}),
                                 "cond": Branch({"encoder_hidden_states": prompt_embeds})}, guidance_scale)


def initial_latents(
    batch_size: int, *, unet, scheduler, vae_scale_factor: int, height: int, width: int,
    generator: torch.Generator | None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x_T drawn exactly as diffusers' ``StableDiffusionPipeline.prepare_latents`` does (the contract's --seed)."""
    shape = (batch_size, unet.config.in_channels, height // vae_scale_factor, width // vae_scale_factor)
    latents = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
    return latents * scheduler.init_noise_sigma


def sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler,
    latents: torch.Tensor,
    *,
    num_inference_steps: int,
    grad_from: int | None = None,
    callback: StepCallback | None = None,
    predict: Predictor | None = None,
    differentiable: bool = False,
    set_timesteps: Callable[[int, torch.device], None] | None = None,
) -> torch.Tensor:
    """Run DDIM from x_T; return the final latents x_0, or x0_pred at step ``grad_from`` with gradient.

    Args:
        denoiser: guided model output at (x_t, t), e.g. a :class:`CFGDenoiser`.
        scheduler: a diffusers ``DDIMScheduler``, or any scheduler with ``set_timesteps``/``step``
            (``FlowMatchEulerDiscreteScheduler`` for SD3); the default one-step prediction uses its
            ``alphas_cumprod``, a family with another schedule passes ``predict``.
        latents: x_T, e.g. from :func:`initial_latents`.
        num_inference_steps: sampling steps (T of ReNeg Sec. 4.2; paper: 30).
        grad_from: None for inference; else the step index k in [0, T) at which to stop
            and predict x0 with gradient (training: k in the last ``grad_window`` steps).
        callback: called after every no-grad step with (index, timestep, latents).
        predict: the one-step prediction (default: ReNeg Eq. 6 from the scheduler's ``alphas_cumprod``
            and prediction type; a family passes its own, e.g. flow matching's).
        differentiable: with ``grad_from=None``, keep the gradient through every step x_T -> x_0 (backpropagation
            through the whole chain: the Jacobian dX/dtheta of ReNeg Sec. 4.1, :mod:`reneg.evaluate.efficiency`).
        set_timesteps: ``(steps, device)`` -> None, sets the scheduler's schedule (default:
            ``scheduler.set_timesteps``); a family whose schedule depends on the image size passes its own
            (:meth:`reneg.core.family.Family.set_timesteps`, FLUX's resolution-dependent shift).
    """
    if set_timesteps is None:
        scheduler.set_timesteps(num_inference_steps, device=latents.device)
    else:
        set_timesteps(num_inference_steps, latents.device)
    timesteps = scheduler.timesteps
    stop = len(timesteps) if grad_from is None else grad_from
    if not 0 <= stop <= len(timesteps) - (grad_from is not None):
        raise ValueError(f"grad_from={grad_from} is outside [0, {len(timesteps)})")
    if differentiable and grad_from is not None:
        raise ValueError("differentiable=True backpropagates through the whole chain: pass grad_from=None")
    # flow-matching schedulers take x_t as it is (they have no scale_model_input)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    with contextlib.nullcontext() if differentiable else torch.no_grad():  # 1. x_T -> x_t, no gradient
        for index, t in enumerate(timesteps[:stop]):
            model_output = denoiser(scale(latents, t), t)
            latents = scheduler.step(model_output, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(index, t, latents)
    if grad_from is None:
        return latents
    t = timesteps[grad_from]  # 2. one guided call with gradient at x_t, stop-gradient at x_t
    x_t = latents.detach()
    model_output = denoiser(scale(x_t, t), t)
    if predict is not None:
        return predict(model_output, x_t, t)
    return predict_x0(
        model_output, x_t, scheduler.alphas_cumprod[t.long().cpu()], prediction_type=scheduler.config.prediction_type
    )


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode latents to images in [0, 1], (B, 3, H, W), differentiable; as diffusers' pipelines do."""
    latents = latents / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None) is not None:
        latents = latents + vae.config.shift_factor
    images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    images = images.to(torch.promote_types(images.dtype, torch.float32))
    return (images / 2 + 0.5).clamp(0, 1)
