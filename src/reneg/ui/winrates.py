"""Win rates over a prompt set, as ``reneg eval --limit N`` computes them: the UI runs eval itself.

:func:`win_rates` builds the :class:`~reneg.evaluate.runner.EvalConfig` that ``reneg eval --benchmark SET
--limit N --methods ... --metrics ... --seed S --steps T --guidance-scale G --out DIR`` would parse and runs
:func:`~reneg.evaluate.runner.evaluate` on the UI's loaded model; the tables are read back from the
results.json it wrote. Same seeds (item (p, i) from (seed, p, i)), same batches, same scoring from the saved
PNGs, same means and win rates (ties half), so the numbers are that command's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

from ..errors import ReNegError
from ..evaluate.labels import short_labels
from ..evaluate.runner import EvalConfig, evaluate
from ..models.loading import LoadedModel
from .grid import model_flags


@dataclass
class WinRateRequest:
    """What the win-rate tab asks: a prompt set (benchmark name or prompts file), its first ``count`` prompts,
    the methods (specs as in ``reneg eval --methods``), the metrics, and eval's sampling settings."""

    prompt_set: str
    count: int
    specs: list[str]
    metrics: list[str]
    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None

    def __post_init__(self):
        if not self.prompt_set or not self.prompt_set.strip():
            raise ReNegError("the prompt set is empty: give a benchmark name (e.g. the model's) or a prompts file")
        if len(self.specs) < 2:
            raise ReNegError(f"win rates need at least two methods, got {len(self.specs)}: tick or type another")
        if not 1 <= int(self.count) <= 100_000:
            raise ReNegError(f"the number of prompts N must be between 1 and 100000, got {self.count}")

    def config(self, model: LoadedModel, out: str | Path) -> EvalConfig:
        """The settings ``reneg eval`` would parse from the same flags, on ``model``'s device and dtype."""
        return EvalConfig(**model_flags(model), benchmark=self.prompt_set.strip(), methods=list(self.specs),
                          metrics=list(self.metrics), limit=int(self.count), seed=int(self.seed), steps=self.steps,
                          guidance_scale=self.guidance_scale, out=str(out))


def win_rates(model: LoadedModel, request: WinRateRequest, out: str | Path) -> tuple[dict, Path]:
    """Run ``reneg eval`` for ``request`` into ``out`` on ``model``; return its results.json and that file's path."""
    path = Path(evaluate(request.config(model, out), model=model))
    return json.loads(path.read_text()), path


def mean_table(results: dict) -> tuple[list[str], list[list]]:
    """(headers, rows): each method's mean per metric."""
    labels = short_labels(list(results["methods"]))
    rows = [[labels[method], *(summary["mean"][m] for m in results["metrics"])]
            for method, summary in results["methods"].items()]
    return ["method", *results["metrics"]], rows


def win_rate_table(results: dict) -> tuple[list[str], list[list]]:
    """(headers, rows): every ordered pair "A vs B" and A's win rate over B per metric (ties count half)."""
    methods = list(results["methods"])
    labels = short_labels(methods)
    rows = [[f"{labels[a]} vs {labels[b]}", *(results["win_rates"][f"{a} vs {b}"][m] for m in results["metrics"])]
            for a, b in permutations(methods, 2)]
    return ["A vs B (A's win rate)", *results["metrics"]], rows
