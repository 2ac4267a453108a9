"""Differentiable rewards ``reward(images, prompts) -> scores`` and their registry.

Importing this package registers the built-in rewards (``pickscore``,
``clip-score``, ``contrast``, ``saturation``, ``random-linear``).
"""

from .base import (
    Reward,
    RewardSpec,
    WeightedSum,
    available_rewards,
    build_reward,
    combine,
    freeze,
    register_reward,
    reward_spec,
)
from . import clip, simple  # noqa: E402,F401  - registers the built-in rewards

__all__ = [
    "Reward",
    "RewardSpec",
    "WeightedSum",
    "available_rewards",
    "build_reward",
    "combine",
    "freeze",
    "register_reward",
    "reward_spec",
]
