"""The reward protocol, the registry of named rewards, and their weighted sum.

A reward is a plain callable ``reward(images, prompts) -> scores``:

* ``images``: float tensor ``(B, 3, H, W)`` with values in ``[0, 1]``, any ``H, W``, any device and dtype;
* ``prompts``: ``list[str]`` of length ``B`` (image ``i`` was generated from ``prompts[i]``);
* ``scores``: float32 tensor ``(B,)`` on the images' device, higher is better.

Scores are differentiable with respect to ``images`` (no PIL or numpy in the
path), which is what reward-feedback training of a negative embedding needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..config import builtin_command
from ..errors import ReNegError
from ..registry import Registry

#: The dtype of every reward's scores (a loss in fp16 would lose the small reward differences).
SCORE_DTYPE = torch.float32
#: The factory arguments every reward takes; any other keyword of a factory is an option.
FACTORY_ARGUMENTS = ("model", "device", "dtype")


@runtime_checkable
class Reward(Protocol):
    """``reward(images (B,3,H,W) in [0,1], prompts: list[str] of length B) -> scores (B,)``, differentiable in images."""

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...


class RewardFactory(Protocol):
    """``factory(model, *, device, dtype) -> Reward``; ``model`` is a local path, a hub id, or None."""

    def __call__(self, model: str | None, *, device: torch.device, dtype: torch.dtype) -> Reward: ...


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: its factory, the model it loads by default, and a one-line description."""

    name: str
    factory: RewardFactory
    default_model: str | None
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options its factory takes besides ``model, device, dtype`` (HPS: ``architecture``,
        ``antialias``)."""
        parameters = inspect.signature(self.factory).parameters
        return tuple(name for name in parameters if name not in FACTORY_ARGUMENTS)


#: The registered rewards (plugins' included once read).
REWARDS: Registry[RewardSpec] = Registry("reward")


def register_reward(name: str, *, default_model: str | None = None, description: str = "") -> Callable:
    """Decorator registering ``factory(model, *, device, dtype, **options) -> Reward`` under ``name``."""
    return REWARDS.register(name, lambda factory: RewardSpec(name, factory, default_model, description))


def available_rewards() -> dict[str, str]:
    """Names of the registered rewards mapped to their descriptions, sorted by name."""
    return REWARDS.descriptions()


def reward_spec(name: str) -> RewardSpec:
    """The registered :class:`RewardSpec` for ``name``; an unknown name is a :class:`ReNegError` listing the choices."""
    return REWARDS[name]


def build_reward(
    name: str, *, model: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    **options,
) -> Reward:
    """Build the reward ``name`` on ``device``/``dtype``, loading ``model`` (default: the reward's default model).

    ``options`` go to the factory; one the reward does not take (``spec.options``) is a :class:`ReNegError`.
    """
    spec = reward_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = f"takes only {', '.join(spec.options)}" if spec.options else "takes no options"
        raise ReNegError(f"reward '{name}' has no option {', '.join(unknown)}: it {takes}")
    return spec.factory(model if model is not None else spec.default_model, device=torch.device(device), dtype=dtype,
                        **options)


def require_gradient(scores: torch.Tensor, images: torch.Tensor) -> None:
    """Refuse, in one line, a reward whose scores carry no gradient to the images it scored (an evaluation
    metric such as the world's ``truth-*``): training on it would fail inside backward."""
    if images.requires_grad and not scores.requires_grad:
        raise ReNegError("this reward is not differentiable (its scores carry no gradient to the images): train "
                         "with a differentiable reward, e.g. hpsv2.1, pickscore or shapes-hps (`reneg rewards` "
                         "lists them)")


def freeze(module: nn.Module) -> nn.Module:
    """Put a reward model in eval mode with frozen parameters (gradients still flow to its inputs)."""
    module.eval()
    module.requires_grad_(False)
    return module


def check_inputs(images: torch.Tensor, prompts: Sequence[str]) -> None:
    """Raise :class:`ReNegError` unless ``images`` is a float (B,3,H,W) tensor and ``prompts`` has B strings."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ReNegError(f"a reward takes images of shape (B, 3, H, W), got {shape}")
    if not images.is_floating_point():
        raise ReNegError(f"a reward takes float images in [0, 1], got dtype {images.dtype}")
    if isinstance(prompts, str) or len(prompts) != images.shape[0]:
        count = "a single string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
        raise ReNegError(f"a reward takes one prompt per image: got {images.shape[0]} images and {count}")


def as_scores(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Scores in the protocol's form: (B,) float32 on the images' device."""
    return scores.reshape(images.shape[0]).to(device=images.device, dtype=SCORE_DTYPE)


class WeightedSum:
    """The reward ``sum_k w_k * r_k(images, prompts)`` of named, weighted rewards."""

    def __init__(self, rewards: Mapping[str, tuple[Reward, float]]):
        if not rewards:
            raise ReNegError("combine() needs at least one reward")
        self.rewards = dict(rewards)

    def components(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each unweighted reward's (B,) scores, by name (for logging)."""
        return {name: reward(images, prompts) for name, (reward, _) in self.rewards.items()}

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        parts = self.components(images, prompts)
        return sum(weight * parts[name] for name, (_, weight) in self.rewards.items())


def combine(rewards: Mapping[str, tuple[Reward, float]]) -> WeightedSum:
    """The weighted-sum reward of ``{name: (reward, weight)}``: ``r = sum_k w_k r_k``."""
    return WeightedSum(rewards)


class FrozenModelReward:
    """Base of rewards holding a frozen CLIP-like ``self.model``: where it lives (by its ``logit_scale``)."""

    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype


def _listing(config=None) -> str:
    return "\n".join(f"{name:16s} {description}" for name, description in available_rewards().items())


COMMAND = builtin_command("rewards", None, _listing)
