"""The matched-guidance control (``--guidance-sweep``): baselines at every scale, learned methods against the best.

A preference reward can favour a stronger guidance alone, so a learned
negative is compared with each baseline both at its own guidance scale and at
the baseline's best scale of the sweep (per metric, by mean).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import ReNegError
from ..methods.spec import MethodSpec
from .metrics import mean, win_rate


@dataclass(frozen=True)
class Run:
    """One method (a spec without ``@GS``) at one guidance scale: one folder of images."""

    base: str
    guidance_scale: float

    @property
    def key(self) -> str:
        return f"{self.base}@{scale_label(self.guidance_scale)}"

    @property
    def slug(self) -> str:
        """Its folder name: readable, filesystem- and URL-safe, unique by a hash of the key."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", self.base)[:40].strip("-.")
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        return f"{readable}-gs{scale_label(self.guidance_scale)}-{digest}"


def scale_label(guidance_scale: float) -> str:
    """``7.5`` -> ``"7.5"``, ``10.0`` -> ``"10"``: the guidance scale as a key."""
    return f"{guidance_scale:g}"


def parse_scales(text: str | None) -> list[float]:
    """``"3,5,7.5"`` -> [3.0, 5.0, 7.5] (sorted, unique); None or empty -> []."""
    if not text:
        return []
    try:
        scales = sorted({float(piece) for piece in text.split(",") if piece.strip()})
    except ValueError:
        raise ReNegError(f"--guidance-sweep '{text}' must be comma-separated numbers, e.g. 3,5,7.5,10,15") from None
    if any(not 0 <= scale < float("inf") for scale in scales):
        raise ReNegError(f"--guidance-sweep '{text}': guidance scales must be finite and >= 0")
    return scales


def main_run(spec: MethodSpec, default_scale: float) -> Run:
    return Run(spec.base, spec.guidance_scale if spec.guidance_scale is not None else default_scale)


def plan_runs(specs: list[MethodSpec], default_scale: float, scales: list[float]) -> list[Run]:
    """Every run to make: the specs' own, then each baseline at every swept scale and at each learned method's scale."""
    runs = [main_run(spec, default_scale) for spec in specs]
    if scales:
        baselines = [spec for spec in specs if spec.entry.baseline]
        if not baselines:
            raise ReNegError("--guidance-sweep needs a baseline in --methods (null, handcrafted or "
                             "negative-prompt=TEXT) to sweep")
        learned_scales = [main_run(spec, default_scale).guidance_scale for spec in specs if not spec.entry.baseline]
        runs += [Run(spec.base, scale) for spec in baselines for scale in [*scales, *learned_scales]]
    return list(dict.fromkeys(runs))


def _baseline_summary(base: str, runs: list[Run], means: dict[str, dict[str, float]],
                      metrics: list[str]) -> dict:
    scales = sorted({run.guidance_scale for run in runs if run.base == base})
    by_scale = {scale_label(s): means[Run(base, s).key] for s in scales}
    best = {m: max(scales, key=lambda s: (means[Run(base, s).key][m], -s)) for m in metrics}
    return {"by_scale": by_scale, "best_scale": best,
            "best_mean": {m: means[Run(base, best[m]).key][m] for m in metrics}}


def _versus(run: Run, baseline: Run, scores: dict[str, dict[str, list[float]]], metric: str) -> dict:
    return {"guidance_scale": baseline.guidance_scale, "baseline_mean": mean(scores[baseline.key][metric]),
            "delta": mean(scores[run.key][metric]) - mean(scores[baseline.key][metric]),
            "win_rate": win_rate(scores[run.key][metric], scores[baseline.key][metric])}


def summarize_sweep(specs: list[MethodSpec], runs: list[Run], scores: dict[str, dict[str, list[float]]], *,
                    metrics: list[str], scales: list[float], default_scale: float) -> dict:
    """results.json["guidance_sweep"]: each baseline's mean per scale and best scale, each learned method against
    each baseline at the same scale and at the baseline's best scale (mean difference and win rate)."""
    means = {run.key: {m: mean(scores[run.key][m]) for m in metrics} for run in runs}
    bases = list(dict.fromkeys(spec.base for spec in specs if spec.entry.baseline))
    baselines = {base: _baseline_summary(base, runs, means, metrics) for base in bases}
    learned = {}
    for spec in (spec for spec in specs if not spec.entry.baseline):
        run = main_run(spec, default_scale)
        learned[spec.text] = {"guidance_scale": run.guidance_scale, "mean": means[run.key], "vs": {
            base: {m: {"same_scale": _versus(run, Run(base, run.guidance_scale), scores, m),
                       "best_scale": _versus(run, Run(base, baselines[base]["best_scale"][m]), scores, m)}
                   for m in metrics}
            for base in bases}}
    return {"scales": scales, "baselines": baselines, "learned": learned}
