"""The ReNeg training objective as a function: a batch in, loss and rewards out (ReNeg Sec. 4.2, Eq. 7).

The loop (:mod:`reneg.methods.reneg.train`) only draws batches, steps the optimizer and emits
records; what is optimised lives here, so that per-sample adaptation (Algorithm 1) reuses it.
"""

from __future__ import annotations

import torch

from ...core.family import Family, TextConditioning
from ...core.guidance import CFG, Rule
from ...core.rollout import rollout, text_branches
from ...rewards import Reward
from ...rewards.base import require_gradient
from ...rewards.video import frame_rewards
from ..randomness import Batch


def reneg_objective(family: Family, reward: Reward, batch: Batch, negative: TextConditioning, *,
                    guidance_scale: float | torch.Tensor, steps: int, resolution: int, rule: Rule = CFG,
                    full_chain: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """ReNeg's loss on one batch: ``-mean reward(decode(x0_pred))`` (Eq. 7), and the rewards (detached).

    CFG runs inside (Eq. 5) with ``negative`` on the negative branch (one row for a
    global embedding, one per prompt for per-sample ones); x_T -> x_t without
    gradient, x0_pred (Eq. 6) and the decoder with gradient. ``rule``: another guidance
    rule in CFG's place (NAG, :mod:`reneg.core.nag`: the negative in attention space).
    """
    branches = text_branches(family, family.encode(batch.prompts), negative, resolution=resolution)
    images = rollout(family, branches, batch.latents, steps=steps, guidance_scale=guidance_scale,
                     grad_from=None if full_chain else batch.grad_from, rule=rule, differentiable=full_chain)
    rewards = frame_rewards(reward, images, batch.prompts).float()  # videos: mean over frames
    require_gradient(rewards, images)
    return -rewards.mean(), rewards.detach()
