"""Differentiable rewards ``reward(images, prompts) -> scores`` and their registry.

Importing this package registers the built-in rewards (``pickscore``,
``clip-score``, ``contrast``, ``saturation``, ``random-linear``) and the
papers' reward models (``hpsv2``, ``hpsv2.1``, ``hpsv3``, ``aesthetic``, ``imagereward``,
``clip-score-min-object``, ``clip-score-full-prompt``) and diagnostics
(``colorfulness``; see :data:`DIAGNOSTICS`).
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
from . import aesthetic, hps, hpsv3, imagereward, min_object  # noqa: E402,F401  - registers the papers' reward models
from .diagnostics import DIAGNOSTICS, diagnostic_rewards  # noqa: E402  - registers colorfulness
from .weighted import build_rewards_from_config  # noqa: E402

__all__ = [
    "DIAGNOSTICS",
    "Reward",
    "RewardSpec",
    "WeightedSum",
    "available_rewards",
    "build_reward",
    "build_rewards_from_config",
    "combine",
    "diagnostic_rewards",
    "freeze",
    "register_reward",
    "reward_spec",
]
