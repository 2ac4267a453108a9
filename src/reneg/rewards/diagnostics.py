"""Model-free image diagnostics that evaluation can always report: colourfulness and saturation.

A reward-tuned negative embedding can raise a preference score by
over-saturating images; these two numbers make that visible next to the
reward. Both are registered rewards (differentiable), so they can also be
trained on or combined.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Reward, as_scores, build_reward, check_inputs, register_reward
from .simple import EPS, _no_model

#: Names of the diagnostics, in report order (``saturation`` is registered in :mod:`.simple`).
DIAGNOSTICS = ("colorfulness", "saturation")
#: Hasler-Suesstrunk weight of the mean opponent-colour magnitude.
MEAN_WEIGHT = 0.3
#: The metric is defined on 0-255 pixel values (its published thresholds, e.g. 15 = "slightly colourful", use them).
PIXEL_SCALE = 255.0


def colorfulness(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness ``M = sigma_rgyb + 0.3 mu_rgyb`` on 0-255 values.

    ``rg = R - G``, ``yb = (R + G) / 2 - B``; ``sigma_rgyb = sqrt(var(rg) + var(yb))``
    and ``mu_rgyb = sqrt(mean(rg)^2 + mean(yb)^2)`` over the pixels (population
    variance); ``eps`` inside the roots keeps the gradient finite on grey images.
    """
    check_inputs(images, prompts)
    red, green, blue = (PIXEL_SCALE * images.float()).flatten(2).unbind(dim=1)
    rg, yb = red - green, 0.5 * (red + green) - blue
    sigma = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False) + EPS)
    mu = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2 + EPS)
    return as_scores(sigma + MEAN_WEIGHT * mu, images)


@register_reward("colorfulness", description="Hasler-Suesstrunk colourfulness on 0-255 values (diagnostic); no model")
def colorfulness_reward(model: str | None, *, device: torch.device, dtype: torch.dtype):
    """The :func:`colorfulness` reward."""
    _no_model("colorfulness", model)
    return colorfulness


def diagnostic_rewards(*, device: str | torch.device = "cpu") -> dict[str, Reward]:
    """Every diagnostic by name, ready to score alongside any reward (they need no model)."""
    return {name: build_reward(name, device=device) for name in DIAGNOSTICS}
