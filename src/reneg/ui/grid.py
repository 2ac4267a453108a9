"""What the UI computes, as plain functions: one prompt and seed, several methods, the same x_T for each.

The x_T is the first one ``reneg generate --seed S`` draws, so a grid's image of a method equals that
command's first image for the prompt (one image, batch 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ReNegError
from ..io import to_pil
from ..methods.spec import build_methods, parse_method_spec, with_own_scale
from ..models.device import PRECISIONS
from ..models.loading import LoadedModel
from ..rewards import build_reward


@dataclass
class Cell:
    """One image of the grid: the method spec it was made with, the image, its scores by metric."""

    spec: str
    guidance_scale: float
    image: object  # PIL.Image
    scores: dict[str, float]


class Scorer:
    """The model's default metrics (its training reward when it names none), built once and kept."""

    def __init__(self, model: LoadedModel, names: list[str] | None = None):
        defaults = model.defaults
        self.names = list(names or defaults.metrics or (defaults.reward,))
        device = model.pipe.device
        self.rewards = {name: build_reward(name, device=device) for name in self.names}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> list[dict[str, float]]:
        images = images.clone()  # the sampler's inference tensors as a normal one (rewards may read its version)
        scores = {name: reward(images, prompts).float().cpu().tolist() for name, reward in self.rewards.items()}
        return [{name: scores[name][row] for name in self.names} for row in range(len(prompts))]


def model_flags(model: LoadedModel) -> dict[str, str]:
    """``--model``, ``--device`` and ``--precision`` of the loaded model, for the configs of the commands the UI
    runs on it (``reneg eval``, ``reneg train``)."""
    dtype = getattr(model.pipe, "dtype", torch.float32)
    precision = next((name for name, d in PRECISIONS.items() if d == dtype), "fp32")
    return {"model": model.name, "device": str(model.pipe.device), "precision": precision}


def check_request(prompt: str, specs: list[str], steps: int, seed: int) -> None:
    """One-line refusals for what the UI's fields may hold."""
    if not prompt or not prompt.strip():
        raise ReNegError("the prompt is empty: type what the image should show, e.g. 'a red circle'")
    if not specs:
        raise ReNegError("no method chosen: tick at least one (null, handcrafted, ...) or give a learned file")
    if not 1 <= int(steps) <= 200:
        raise ReNegError(f"steps must be between 1 and 200, got {steps}")
    if not 0 <= int(seed) < 2**63:
        raise ReNegError(f"the seed must be between 0 and 2^63 - 1, got {seed}")


def grid(model: LoadedModel, scorer: Scorer, prompt: str, specs: list[str], *, seed: int, steps: int,
         guidance_scales: list[float]) -> list[Cell]:
    """Every method of ``specs`` at every guidance scale, from the same x_T (``seed``), scored."""
    check_request(prompt, specs, steps, seed)
    parsed = [parse_method_spec(spec) for spec in specs]
    methods = build_methods(parsed, model)
    family = model.family
    latents = family.initial_latents(1, resolution=model.resolution, generator=torch.Generator().manual_seed(seed))
    cells = []
    for spec in parsed:
        method = methods[spec.base]
        spec = with_own_scale(spec, method)  # NAG methods: their own s, not the CFG scales
        getattr(method, "prepare", lambda model, prompts: None)(model, [prompt])  # DNP's captioner
        for scale in [spec.guidance_scale] if spec.guidance_scale is not None else guidance_scales:
            sampling = model.sampling(steps=steps, guidance_scale=scale)
            images = method.images(model, [prompt], latents, guidance_scale=sampling.guidance_scale,
                                   steps=sampling.steps)
            if not torch.isfinite(images).all():
                raise ReNegError(f"method {spec.text} at guidance {scale} gave NaN images: check its file")
            cells.append(Cell(spec.base, sampling.guidance_scale, to_pil(images)[0], scorer(images, [prompt])[0]))
    return cells
