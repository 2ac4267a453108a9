"""The one rollout: branch conditioning + x_T + schedule + guidance rule + ``grad_from`` -> images or x0_pred.

Training (ReNeg Sec. 4.2), generation, evaluation and the world's scripts all
make images through :func:`rollout`; what differs between them and between
the papers is only which branches they build (the negative's conditioning and
weights), the rule, and whether a gradient window is open::

    family.encode(prompts) ─► cond branch ─┐
    negative (null, prompt, learned n) ────┼─► GuidedDenoiser(rule) ─► sample(x_T, grad_from) ─► family.decode
    (null branch for DNP's rules) ─────────┘
"""

from __future__ import annotations

import torch

from .denoiser import BASE, Branch, GuidedDenoiser, Weights
from .family import Family, TextConditioning
from .guidance import CFG, Rule
from .sampling import StepCallback, sample


def text_branches(family: Family, prompts: TextConditioning, negative: TextConditioning | None = None, *,
                  resolution: int, negative_weights: Weights = BASE,
                  null: TextConditioning | None = None) -> dict[str, Branch]:
    """The ``cond`` branch of ``prompts`` and, where given, the ``negative`` and ``null`` branches.

    One-row negatives are expanded to the batch. ``negative_weights`` runs the
    negative branch with other weights (Diffusion-NPO's theta + beta * delta).
    """
    batch = len(prompts)
    device = family.device
    branches = {"cond": Branch(family.conditioning(prompts.to(device), resolution=resolution))}
    if negative is not None:
        branches["negative"] = Branch(family.conditioning(negative.to(device).expand(batch), resolution=resolution),
                                      negative_weights)
    if null is not None:
        branches["null"] = Branch(family.conditioning(null.to(device).expand(batch), resolution=resolution))
    return branches


def rollout(family: Family, branches: dict[str, Branch], latents: torch.Tensor, *, steps: int,
            guidance_scale: float | torch.Tensor, rule: Rule = CFG, grad_from: int | None = None,
            decode: bool = True, callback: StepCallback | None = None, differentiable: bool = False) -> torch.Tensor:
    """Sample from x_T = ``latents`` with the guided denoiser of ``branches`` and ``rule``.

    Args:
        family: the loaded pipeline's family (scheduler, model, one-step prediction, decoder).
        branches: see :func:`text_branches`.
        latents: x_T, e.g. from ``family.initial_latents``.
        steps: sampling steps T.
        guidance_scale: the rule's scale (a tensor when it is learned).
        rule: the guidance rule (ReNeg Eq. 5 by default; DNP Eq. 4 and Eq. 19 in :mod:`reneg.core.guidance`).
        grad_from: None for inference (x_0, no gradient); else the step index k of x_t: x_T -> x_t without
            gradient, then x0_pred with gradient (ReNeg Eq. 6).
        decode: return images in [0, 1] (decoded with gradient when a window is open), else latents.
        differentiable: with ``grad_from=None``, the gradient flows through every step (ReNeg Sec. 4.1's Jacobian).
    """
    denoiser = GuidedDenoiser(family.model, branches, guidance_scale, rule)
    resolution = family.resolution_of(latents)

    def set_timesteps(count: int, device: torch.device) -> None:
        family.set_timesteps(count, resolution=resolution, device=device)

    latents = sample(denoiser, family.scheduler, latents.to(family.device), num_inference_steps=steps,
                     grad_from=grad_from, callback=callback, predict=family.predict_x0, differentiable=differentiable,
                     set_timesteps=set_timesteps)
    if not decode:
        return latents
    if grad_from is None and not differentiable:
        with torch.no_grad():
            return family.decode(latents)
    return family.decode_with_grad(latents)


@torch.inference_mode()
def guided_images(family: Family, prompts: list[str], negative: TextConditioning, latents: torch.Tensor, *,
                  guidance_scale: float, steps: int, resolution: int, rule: Rule = CFG,
                  negative_weights: Weights = BASE) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] for ``prompts`` from x_T with a fixed negative: inference's common case.

    Runs under ``torch.inference_mode`` (no autograd bookkeeping at all); the images are inference tensors.
    """
    branches = text_branches(family, family.encode(prompts), negative, resolution=resolution,
                             negative_weights=negative_weights,
                             null=family.null_text() if "null" in rule.branches else None)
    return rollout(family, branches, latents, steps=steps, guidance_scale=guidance_scale, rule=rule)
