"""Addressed randomness of training loops: batches, x_T and t drawn from (seed, step, index), never streamed.

Randomness is addressed, not streamed: sample ``i`` of the global batch at
optimizer step ``s`` draws its prompt and x_T from a generator seeded by
``(seed, s, 1 + i)``, and the step's t from ``(seed, s, 0)``. So a global batch is
the same however it is split across processes and micro-batches, and a resumed
run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import require
from ..core.family import Family


def mixed_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integers by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def draw_grad_from(*, seed: int, step: int, steps: int, grad_window: int) -> int:
    """The step index k of x_t for optimizer step ``step``: uniform over the last ``grad_window`` of ``steps``."""
    generator = torch.Generator().manual_seed(mixed_seed(seed, step, 0))
    return int(torch.randint(steps - grad_window, steps, (1,), generator=generator))


@dataclass(frozen=True)
class RolloutSettings:
    """The sampling settings of a training rollout: a config's flags, else the model's defaults."""

    steps: int
    grad_window: int
    guidance_scale: float
    resolution: int

    @classmethod
    def of(cls, config, model) -> RolloutSettings:
        """From ``config.steps``, ``grad_window``, ``guidance_scale`` and ``resolution`` (None: the model's own,
        :meth:`~reneg.models.LoadedModel.sampling`; the grad window defaults to the last third of the steps,
        ReNeg's 10 of 30)."""
        sampling = model.sampling(config)
        grad_window = config.grad_window or max(1, math.ceil(sampling.steps / 3))
        require(1 <= grad_window <= sampling.steps,
                f"--grad-window must be between 1 and --steps ({sampling.steps}), got {grad_window}")
        return cls(sampling.steps, grad_window, sampling.guidance_scale, sampling.resolution)


@dataclass
class Batch:
    """A slice of one optimizer step's global batch: prompts, their x_T and the step index of x_t."""

    prompts: list[str]
    latents: torch.Tensor
    grad_from: int


def draw_batch(family: Family, prompts: Sequence[str], *, seed: int, step: int, indices: range, resolution: int,
               steps: int, grad_window: int) -> Batch:
    """Samples ``indices`` of the global batch of ``step``: each draws a prompt and x_T from its own generator."""
    chosen, latents = [], []
    for index in indices:
        generator = torch.Generator().manual_seed(mixed_seed(seed, step, 1 + index))
        chosen.append(prompts[int(torch.randint(len(prompts), (1,), generator=generator))])
        latents.append(family.initial_latents(1, resolution=resolution, generator=generator))
    return Batch(chosen, torch.cat(latents),
                 draw_grad_from(seed=seed, step=step, steps=steps, grad_window=grad_window))
