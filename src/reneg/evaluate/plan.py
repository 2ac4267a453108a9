"""The checked inputs of ``reneg eval``: items (prompt, image, seed), their fixed batches, and the plan.

The runner builds a :class:`Plan`; the report and the page read it. Both import
this module, and it imports neither, so the package has no import cycle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..methods.base import Method
from ..methods.spec import MethodSpec
from ..models.loading import LoadedModel
from ..prompts import Prompt
from ..rewards import Reward
from .metrics import MetricSpec
from .sweep import Run


@dataclass(frozen=True)
class Item:
    """Image ``image_index`` of prompt ``prompt_index``; ``seed`` seeds the CPU generator of its x_T."""

    prompt_index: int
    image_index: int
    prompt: Prompt
    seed: int

    @property
    def name(self) -> str:
        return f"p{self.prompt_index:05d}-i{self.image_index:02d}"


def item_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """A 63-bit seed mixed from (seed, prompt index, image index) by numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, prompt_index, image_index]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def make_items(prompts: list[Prompt], *, images_per_prompt: int, seed: int) -> list[Item]:
    return [Item(p, i, prompt, item_seed(seed, p, i)) for p, prompt in enumerate(prompts)
            for i in range(images_per_prompt)]


def chunks(items: list, size: int) -> list[list]:
    """``items`` cut into batches at fixed positions, so a resumed run batches exactly as an uninterrupted one."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def _short_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Plan:
    """Everything checked and loaded before anything is written.

    ``config`` is the run's :class:`~reneg.evaluate.runner.EvalConfig`. ``settings``
    decide the images (model identity, reneg version, seed, steps, ...);
    ``metric_settings`` decide each metric's scores beyond them (its reward
    model's identity, options and precision).
    """

    config: Any
    model: LoadedModel
    specs: list[MethodSpec]
    metrics: list[MetricSpec]
    rewards: dict[str, Reward]
    prompts: list[Prompt]
    items: list[Item]
    methods: dict[str, Method]
    runs: list[Run]
    steps: int
    guidance_scale: float
    scales: list[float]
    resolution: int
    settings: dict
    metric_settings: dict[str, dict]

    def run_settings(self, run: Run) -> dict:
        """What decides a run's images; a saved folder is reused only if all of it matches."""
        return {**self.settings, "method": run.base, "method_identity": self.methods[run.base].identity,
                "guidance_scale": run.guidance_scale}

    def score_key(self, run: Run) -> str:
        """The run's key in the score cache: its settings are part of it, so remade images are scored anew."""
        return f"{run.key}#{_short_hash(self.run_settings(run))}"

    def metric_key(self, metric: MetricSpec) -> str:
        """The metric's key in the score cache: a changed reward model, option or precision is scored anew."""
        return f"{metric.text}#{_short_hash(self.metric_settings[metric.text])}"
