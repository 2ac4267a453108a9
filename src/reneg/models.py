"""Load a diffusers pipeline by path, hub id (local cache only) or built-in name, with its defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import ReNegError
from .hub import resolve

logger = logging.getLogger(__name__)

#: The community's handcrafted negative prompt (the role of N* in ReNeg Table 2).
COMMUNITY_NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry"
)


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model defaults that a flag left unset falls back to."""

    guidance_scale: float = 7.5
    num_inference_steps: int = 30
    handcrafted_negative: str = COMMUNITY_NEGATIVE_PROMPT
    reward: str = "pickscore"
    reward_model: str | None = None
    train_prompts: tuple[str, ...] = ()
    benchmark: str = "hpsv2"
    metrics: tuple[str, ...] = ()  # what `reneg eval` reports by default (empty: the reward)


@dataclass
class LoadedModel:
    """A diffusers pipeline (DDIM scheduler, frozen, on its device and dtype) with the name it was loaded by."""

    pipe: object
    name: str
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    @property
    def resolution(self) -> int:
        pipe = self.pipe
        return pipe.unet.config.sample_size * pipe.vae_scale_factor


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped with reneg: built in code (``build``) or saved in diffusers format (``directory``)."""

    defaults: Callable[[], ModelDefaults]
    description: str
    build: Callable[[], object] | None = None
    directory: Callable[[], str] | None = None


TINY_PROMPTS = (
    "a red circle on a blue background", "a green square on a white background",
    "a yellow star on a black background", "a purple triangle on an orange background",
)


def _tiny():
    from .tiny import tiny_sd_pipeline

    return tiny_sd_pipeline()


#: What `reneg eval` reports on the shapes world: both preference models and the ground truth.
WORLD_METRICS = ("shapes-hps", "shapes-pick", "truth-adherence", "truth-shape", "truth-colour", "truth-background",
                 "truth-cleanliness")


def _shapes_defaults() -> ModelDefaults:
    from . import world

    config = world.world_config()
    prompts = (world.path("prompts") / "train.txt").read_text().splitlines()
    return ModelDefaults(guidance_scale=config["guidance_scale"], num_inference_steps=config["num_inference_steps"],
                         handcrafted_negative=config["handcrafted_negative"], reward=config["reward"],
                         train_prompts=tuple(prompts), benchmark="shapes", metrics=WORLD_METRICS)


def _shapes_directory() -> str:
    from . import world

    return str(world.path("sd"))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "tiny": BuiltinModel(
        build=_tiny,
        defaults=lambda: ModelDefaults(guidance_scale=7.5, num_inference_steps=10,
                                       handcrafted_negative="blurry, low contrast", reward="contrast",
                                       train_prompts=TINY_PROMPTS, benchmark="tiny"),
        description="random-weight 64x64 Stable Diffusion (2 M parameters), for smoke tests",
    ),
}


def _register_world() -> str:
    """Register the shapes world when its weights ship; returns the default model's name."""
    from . import world

    if not world.is_built():
        return "tiny"
    BUILTIN_MODELS["shapes"] = BuiltinModel(
        directory=_shapes_directory, defaults=_shapes_defaults,
        description="the shapes world: a trained 64x64 Stable Diffusion of coloured shapes (the embedded default)",
    )
    return "shapes"


#: What runs when no --model is given: the shapes world, or the tiny random model if it is not built.
DEFAULT_MODEL = _register_world()

#: Components every UNet-based Stable Diffusion pipeline has, and that the sampler uses.
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _from_pretrained(directory: str, *, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    if not (Path(directory) / "model_index.json").exists():
        raise ReNegError(f"'{directory}' is not a diffusers pipeline directory (no model_index.json): "
                         "pass a directory saved with save_pretrained, a cached hub id, or a built-in name")
    extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        return DiffusionPipeline.from_pretrained(directory, dtype=dtype, local_files_only=True, **extra)
    except TypeError:  # pipelines without a safety checker reject the extra arguments
        return DiffusionPipeline.from_pretrained(directory, dtype=dtype, local_files_only=True)


def _prepare(pipe, *, device: torch.device, dtype: torch.dtype):
    """DDIM scheduler, everything frozen and in eval mode, on the device and dtype of the policy."""
    from diffusers import DDIMScheduler

    missing = [name for name in REQUIRED_COMPONENTS if getattr(pipe, name, None) is None]
    if missing:
        raise ReNegError(f"pipeline {type(pipe).__name__} lacks {', '.join(missing)}: reneg needs a UNet-based "
                         "Stable Diffusion pipeline (SD1.x, SD2.x)")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if pipe.unet.dtype != dtype:
        pipe.to(dtype=dtype)
    pipe.to(device)
    for name in ("unet", "vae", "text_encoder"):
        getattr(pipe, name).requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_model(model: str | None = None, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load ``model``: a built-in name, a diffusers pipeline directory, or a hub id in the local cache.

    No ``model`` means the embedded default. Never downloads: a hub id missing from the cache
    raises :class:`ReNegError` that says how to make it available.
    """
    name = model or DEFAULT_MODEL
    device = torch.device(device)
    if name in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS[name]
        pipe = builtin.build() if builtin.build else _from_pretrained(builtin.directory(), dtype=dtype)
        return LoadedModel(_prepare(pipe, device=device, dtype=dtype), name, builtin.defaults())
    directory = resolve(name, what="model")
    pipe = _from_pretrained(directory, dtype=dtype)
    return LoadedModel(_prepare(pipe, device=device, dtype=dtype), name, ModelDefaults())


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Text-encoder outputs of ``prompts``, (B, L, D), exactly as the pipeline's own ``encode_prompt``."""
    embeds, _ = pipe.encode_prompt(prompts, pipe.device, 1, do_classifier_free_guidance=False)
    return embeds
