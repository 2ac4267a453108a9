"""Metrics of ``reneg eval``: reward specs (``name[:option=value...][=PATH]``), diagnostics, means and win rates."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ReNegError
from ..identity import reference_identity
from ..rewards import DIAGNOSTICS, Reward, available_rewards, build_reward, reward_spec

#: ``name``, then any ``:option=value`` (the value holds no ``=`` or ``:``), then an optional ``=PATH_OR_ID``.
METRIC_SPEC = re.compile(r"(?P<name>[^:=]+)(?P<options>(?::[^:=]+=[^:=]*)*)(?:=(?P<model>.*))?")
#: Option values read as booleans; any other value stays a string, or a number where it reads as one.
BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@dataclass(frozen=True)
class MetricSpec:
    """A metric: ``text`` as given (the key in results.json), a registered reward ``name``, its ``model`` and the
    reward's keyword ``options`` (e.g. ``hpsv2.1:antialias=false`` -> ``(("antialias", False),)``)."""

    text: str
    name: str
    model: str | None = None
    diagnostic: bool = False
    options: tuple[tuple[str, object], ...] = ()

    @property
    def model_or_default(self) -> str | None:
        return self.model if self.model is not None else reward_spec(self.name).default_model

    @property
    def option_names(self) -> tuple[str, ...]:
        """The keyword options the reward takes (``antialias`` of HPS)."""
        return reward_spec(self.name).options

    def identity(self) -> str:
        """What decides this metric's scores besides its name and options: its reward model's identity."""
        return reference_identity(self.model_or_default)

    def build(self, *, device: torch.device, dtype: torch.dtype) -> Reward:
        return build_reward(self.name, model=self.model, device=device, dtype=dtype, **dict(self.options))


#: Metrics that are not registered rewards, by name: the MetricSpec subclass that parses, identifies and builds
#: them (the VBench video metrics of :mod:`.video_items` register here).
METRIC_KINDS: dict[str, type[MetricSpec]] = {}


def _option_value(text: str) -> object:
    if text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_metric_spec(text: str, *, diagnostic: bool = False) -> MetricSpec:
    """``name[:option=value...][=PATH_OR_ID]`` of a registered reward; an unknown name or option is ReNegError."""
    text = text.strip()
    match = METRIC_SPEC.fullmatch(text)
    if match is None:
        raise ReNegError(f"metric '{text}': write it as NAME, NAME=PATH_OR_ID or NAME:OPTION=VALUE[=PATH_OR_ID]")
    name, model = match["name"], match["model"]
    kind = METRIC_KINDS.get(name, MetricSpec)
    if kind is MetricSpec:
        reward_spec(name)  # raises ReNegError listing the registered rewards
    if model is not None and not model:
        raise ReNegError(f"metric '{text}': give the reward model after '=' (name=PATH_OR_ID) or drop the '='")
    options = tuple((key, _option_value(value)) for key, _, value in
                    (piece.partition("=") for piece in match["options"].split(":")[1:]))
    metric = kind(text, name, model or None, diagnostic, options)
    unknown = [key for key, _ in options if key not in metric.option_names]
    if unknown:
        takes = f"takes {', '.join(metric.option_names)}" if metric.option_names else "takes no options"
        raise ReNegError(f"metric '{text}': reward '{name}' has no option '{unknown[0]}' (it {takes})")
    return metric


def parse_metric_specs(values: list[str]) -> list[MetricSpec]:
    """Comma-separated metric specs followed by the diagnostics (:data:`reneg.rewards.DIAGNOSTICS`) not chosen."""
    texts = [piece.strip() for value in values for piece in value.split(",") if piece.strip()]
    if not texts:
        raise ReNegError("no metrics given: pass --metrics NAME[,NAME...] (see `reneg rewards`)")
    if len(set(texts)) != len(texts):
        raise ReNegError(f"--metrics names a metric twice ({', '.join(texts)}): give each once")
    metrics = [parse_metric_spec(text) for text in texts]
    chosen = {metric.text for metric in metrics}
    registered = available_rewards()
    metrics += [MetricSpec(name, name, None, diagnostic=True)
                for name in DIAGNOSTICS if name in registered and name not in chosen]
    return metrics


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean, summed exactly (``math.fsum``) so that it does not depend on the order."""
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """Share of paired items on which A scores higher than B, ties counting half (ReNeg Table 3).

    ``win_rate(a, b) + win_rate(b, a) == 1`` for any pairing.
    """
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"win rate needs two equally long, non-empty score lists, got {len(scores_a)} and "
                         f"{len(scores_b)}")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b))
    return wins / len(scores_a)


def grouped(values: Sequence[float], categories: Sequence[str]) -> dict[str, list[float]]:
    """Values by category, categories in order of first appearance."""
    groups: dict[str, list[float]] = {}
    for value, category in zip(values, categories, strict=True):
        groups.setdefault(category, []).append(value)
    return groups
