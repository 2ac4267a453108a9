"""Pure guidance math: classifier-free guidance with a negative branch and the one-step x0 prediction.

Symbols: ``x_t`` the latent at timestep t, ``alpha_bar_t`` the cumulative
product of the noise schedule (ReNeg Eq. 2), ``guidance_scale`` is gamma of
ReNeg Eq. 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def cfg(output_negative: torch.Tensor, output_cond: torch.Tensor, guidance_scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance with a negative branch (ReNeg Eq. 5).

    ``eps = eps(x_t, n) + gamma * (eps(x_t, c) - eps(x_t, n))``: ``n`` is the
    null-text embedding in plain CFG, a handcrafted or learned negative
    embedding otherwise. Applies to any model output (epsilon or v).
    """
    return output_negative + guidance_scale * (output_cond - output_negative)


def three_term(output_null: torch.Tensor, output_negative: torch.Tensor, output_cond: torch.Tensor,
               guidance_scale: float | torch.Tensor) -> torch.Tensor:
    """Negative prompting with three model outputs (DNP Eq. 4).

    ``eps = eps(x_t, phi) + s * (eps(x_t, p) - eps(x_t, n))``: the null text phi
    anchors the step, the guidance pushes towards p and away from n. With
    ``n = phi`` it is plain CFG (Eq. 5 with the null text).
    """
    return output_null + guidance_scale * (output_cond - output_negative)


def dns(output_null: torch.Tensor, output_cond: torch.Tensor, guidance_scale: float | torch.Tensor) -> torch.Tensor:
    """Diffusion-negative sampling (DNP Eq. 19): ``eps = eps(x_t, phi) + s * (eps(x_t, phi) - eps(x_t, p))``.

    Guidance *away* from the prompt p: it samples what the model takes for p's
    opposite. Equal to two-term negative prompting with an empty positive and p
    as the negative at scale ``s + 1`` (DNP Eq. 20): ``eps_p + (s + 1)(eps_phi -
    eps_p)``; at the same scale s the two differ.
    """
    return output_null + guidance_scale * (output_null - output_cond)


@dataclass(frozen=True)
class Rule:
    """A guidance rule: the branches it reads, in the order ``combine`` takes their outputs.

    ``combine(*outputs, guidance_scale)`` is one of the pure functions above.
    ``skips_below_one``: like diffusers, a constant scale <= 1 runs the ``cond``
    branch alone (the negative then has no effect).
    """

    name: str
    branches: tuple[str, ...]
    combine: Callable[..., torch.Tensor]
    skips_below_one: bool = False


#: ReNeg Eq. 5: the negative branch (null text, a negative prompt or a learned n) and the prompt.
CFG = Rule("cfg", ("negative", "cond"), cfg, skips_below_one=True)
#: DNP Eq. 4: null text, negative and prompt.
THREE_TERM = Rule("three-term", ("null", "negative", "cond"), three_term)
#: DNP Eq. 19: null text and the prompt, guided away from the prompt.
DNS = Rule("dns", ("null", "cond"), dns)
RULES = {rule.name: rule for rule in (CFG, THREE_TERM, DNS)}


def predict_x0(
    model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: torch.Tensor, *, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """One-step prediction of x0 from x_t (ReNeg Eq. 6).

    epsilon:      x0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)
    v_prediction: x0 = sqrt(alpha_bar_t) * x_t - sqrt(1 - alpha_bar_t) * v
    sample:       x0 = model_output
    """
    dtype = torch.promote_types(model_output.dtype, torch.float32)  # at least fp32 for the division
    alpha_bar_t = alpha_bar_t.to(device=x_t.device, dtype=dtype)
    sqrt_alpha, sqrt_one_minus = alpha_bar_t.sqrt(), (1 - alpha_bar_t).sqrt()
    x_t, model_output_hi = x_t.to(dtype), model_output.to(dtype)
    if prediction_type == "epsilon":
        x0 = (x_t - sqrt_one_minus * model_output_hi) / sqrt_alpha
    elif prediction_type == "v_prediction":
        x0 = sqrt_alpha * x_t - sqrt_one_minus * model_output_hi
    elif prediction_type == "sample":
        x0 = model_output_hi
    else:
        raise ValueError(f"unsupported prediction_type '{prediction_type}'")
    return x0.to(model_output.dtype)


def predict_x0_flow(velocity: torch.Tensor, x_t: torch.Tensor, sigma_t: torch.Tensor | float) -> torch.Tensor:
    """One-step prediction of x0 for rectified flow matching (SD3): ``x0 = x_t - sigma_t * v``.

    The flow-matching counterpart of ReNeg Eq. 6: with ``x_t = (1 - sigma_t) * x0 + sigma_t * eps``
    and the model predicting the velocity ``v = eps - x0`` (``FlowMatchEulerDiscreteScheduler``),
    ``x_t - sigma_t * v = x0`` exactly. Computed in at least fp32, returned in the model output's dtype.
    """
    dtype = torch.promote_types(velocity.dtype, torch.float32)
    sigma_t = torch.as_tensor(sigma_t, device=x_t.device, dtype=dtype)
    return (x_t.to(dtype) - sigma_t * velocity.to(dtype)).to(velocity.dtype)
