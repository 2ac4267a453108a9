"""What the rectified-flow families share (SD3, FLUX): sigma_t of the schedule and the one-step x0 prediction."""

from __future__ import annotations

import torch

from ..core.family import Family, WrappedDenoiser
from ..core.guidance import predict_x0_flow


class TransformerWrapper(WrappedDenoiser):
    """A pipeline's ``transformer`` behind the UNet's call ``model(x, t, **conditioning)``; subclasses map the call."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    @property
    def network(self) -> torch.nn.Module:
        return self.transformer


class FlowMatchingFamily(Family):
    """A family sampled with ``FlowMatchEulerDiscreteScheduler``: x_t = (1 - sigma_t) x0 + sigma_t eps, v = eps - x0.

    ``denoiser``: the :class:`TransformerWrapper` subclass that puts the pipeline's transformer behind the call.
    """

    denoiser: type[TransformerWrapper] = TransformerWrapper
    _denoiser: TransformerWrapper | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The wrapped transformer, made again when the pipeline's transformer is replaced."""
        if self._denoiser is None or self._denoiser.transformer is not self.pipe.transformer:
            self._denoiser = self.denoiser(self.pipe.transformer)
        return self._denoiser

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t of the scheduler's current schedule at its timestep ``t``."""
        timesteps = self.scheduler.timesteps
        index = int((timesteps == t.to(timesteps.device)).nonzero()[0])
        return self.scheduler.sigmas[index]

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma_t * v (:func:`reneg.core.guidance.predict_x0_flow`)."""
        return predict_x0_flow(model_output, x_t, self.sigma(t))
