"""A weighted sum of rewards from a config table (TOML/YAML ``[rewards]`` section or a dict).

Each entry maps a name to a weight, or to a table with ``weight`` (default
1), ``model`` (checkpoint path or hub id; default the reward's own), an
optional ``reward`` (the registered name, when the entry's name is a label,
e.g. to use one reward twice), and any options the reward's factory takes
(``architecture`` for HPS, ``clip`` for aesthetic, ``tokenizer``/``vision``/
``med_config`` for ImageReward)::

    [rewards]
    "hpsv2.1" = 1.0
    pickscore = { weight = 0.5, model = "/models/PickScore_v1" }
    colorfulness = -0.01
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ReNegError
from .base import FACTORY_ARGUMENTS, WeightedSum, combine, reward_spec

#: Keys of an entry table that are not factory options.
ENTRY_KEYS = ("weight", "model", "reward")


def _weight(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReNegError(f"reward '{label}': weight must be a finite number, got {value!r}")
    return float(value)


def _check_options(label: str, factory, options: Mapping[str, Any]) -> None:
    parameters = inspect.signature(factory).parameters
    accepted = [name for name in parameters if name not in FACTORY_ARGUMENTS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        choices = ", ".join(accepted) or "none"
        raise ReNegError(f"reward '{label}': unknown option(s) {', '.join(unknown)} (options: {choices}; "
                         f"entry keys: {', '.join(ENTRY_KEYS)})")


def build_rewards_from_config(
    table: Mapping[str, float | Mapping[str, Any]], *, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WeightedSum:
    """``combine({label: (reward, weight)})`` of the table's entries (see the module docstring).

    Args:
        table: label -> weight, or label -> ``{"weight", "model", "reward", **options}``.
        device, dtype: where every reward model lives.
    """
    if not isinstance(table, Mapping) or not table:
        raise ReNegError("the rewards table is empty: give at least one 'name = weight' entry")
    rewards = {}
    for label, entry in table.items():
        entry = dict(entry) if isinstance(entry, Mapping) else {"weight": entry}
        weight = _weight(label, entry.pop("weight", 1.0))
        spec = reward_spec(str(entry.pop("reward", label)))
        model = entry.pop("model", None)
        _check_options(label, spec.factory, entry)
        reward = spec.factory(model if model is not None else spec.default_model, device=torch.device(device),
                              dtype=dtype, **entry)
        rewards[label] = (reward, weight)
    return combine(rewards)
