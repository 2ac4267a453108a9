"""Load a diffusers pipeline by path, hub id (local cache only) or built-in name, with its defaults."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import builtin_command
from ..errors import ReNegError
from ..families import family_for
from ..registry import Registry
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
    captioner: str | None = "blip2"  # auto-DNP's captioner (reneg.methods.dnp.captioners); None: only --caption
    #: the paper's per-sample recipe (ReNeg Sec. 5.1: HPSv2.1, lr 5e-3), used by ``reneg adapt`` when the start
    #: file carries no recipe of its own (the authors' released files have no metadata)
    adapt_reward: str = "hpsv2.1"
    adapt_lr: float = 5e-3


@dataclass(frozen=True)
class Sampling:
    """Sampling settings resolved against a model: what a flag gave, else the model's default."""

    steps: int
    guidance_scale: float
    resolution: int


@dataclass
class LoadedModel:
    """A diffusers pipeline (DDIM scheduler, frozen, on its device and dtype) with the name it was loaded by."""

    pipe: object
    name: str
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    @property
    def family(self):
        """The pipeline's :class:`~reneg.families.Family` (what the rollout uses)."""
        return family_for(self.pipe)

    @property
    def resolution(self) -> int:
        return self.family.default_resolution

    def sampling(self, settings=None, **overrides) -> Sampling:
        """The one place that falls back to the model's defaults: ``steps``, ``guidance_scale`` and
        ``resolution`` from ``overrides``, else from ``settings`` (a config, where it has the field), else the
        model's own (None or 0 means unset, as the flags' defaults)."""

        def given(name):
            value = overrides[name] if name in overrides else getattr(settings, name, None)
            return value

        guidance_scale = given("guidance_scale")
        steps = given("steps") or self.defaults.num_inference_steps
        limit = getattr(getattr(self.family.scheduler, "config", None), "num_train_timesteps", None)
        if limit is not None and steps > limit:
            raise ReNegError(f"--steps {steps} is more than this model's scheduler has timesteps ({limit}): use at "
                             f"most {limit}")
        return Sampling(steps=steps,
                        guidance_scale=self.defaults.guidance_scale if guidance_scale is None else guidance_scale,
                        resolution=given("resolution") or self.resolution)


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


_TINY_DEFAULTS = dict(guidance_scale=7.5, num_inference_steps=10, handcrafted_negative="blurry, low contrast",
                      reward="contrast", train_prompts=TINY_PROMPTS, benchmark="tiny", adapt_reward="contrast")


def _tiny():
    from .tiny import tiny_sd_pipeline

    return tiny_sd_pipeline()


def _tiny_sdxl():
    from .tiny import tiny_sdxl_pipeline

    return tiny_sdxl_pipeline()


def _tiny_sd3():
    from .tiny import tiny_sd3_pipeline

    return tiny_sd3_pipeline()


def _tiny_flux(*, schnell: bool = False):
    from .tiny import tiny_flux_pipeline

    return tiny_flux_pipeline(schnell=schnell)


#: The built-in models (plugins' included once read; the shapes world registers ``shapes`` as the default).
MODELS: Registry[BuiltinModel] = Registry("model")
MODELS.add("tiny", BuiltinModel(
    build=_tiny, defaults=lambda: ModelDefaults(**_TINY_DEFAULTS),
    description="random-weight 64x64 Stable Diffusion (2 M parameters), for smoke tests"))
MODELS.add("tiny-sdxl", BuiltinModel(
    build=_tiny_sdxl, defaults=lambda: ModelDefaults(**_TINY_DEFAULTS),
    description="random-weight 64x64 SDXL (two CLIP text encoders, text_time conditioning), for smoke tests"))
MODELS.add("tiny-sd3", BuiltinModel(
    build=_tiny_sd3, defaults=lambda: ModelDefaults(**_TINY_DEFAULTS),
    description="random-weight 64x64 SD3 (CLIP-L/G-like and T5 encoders, MM-DiT, flow matching), for smoke tests"))
MODELS.add("tiny-flux", BuiltinModel(
    build=_tiny_flux, defaults=lambda: ModelDefaults(**_TINY_DEFAULTS),
    description="random-weight 64x64 FLUX.1-dev (CLIP pooled + T5, MM-DiT, guidance embedding), for smoke tests"))
MODELS.add("tiny-flux-schnell", BuiltinModel(
    build=lambda: _tiny_flux(schnell=True), defaults=lambda: ModelDefaults(**_TINY_DEFAULTS),
    description="random-weight 64x64 FLUX.1-schnell (no guidance embedding, fixed shift), for smoke tests"))
_DEFAULT = {"name": "tiny"}


def register_model(name: str, model: BuiltinModel, *, default: bool = False) -> None:
    """Register a built-in model (a plugin's); ``default=True`` makes it what runs with no ``--model``."""
    MODELS.add(name, model)
    if default:
        _DEFAULT["name"] = name


def builtin_models() -> dict[str, BuiltinModel]:
    """Name -> :class:`BuiltinModel`, plugins' included."""
    return dict(MODELS.items())


def default_model() -> str:
    """What runs when no --model is given: a plugin's default (the shapes world), else the tiny random model."""
    MODELS.names()  # plugins load on the first read
    return _DEFAULT["name"]


def _from_pretrained(directory: str, *, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    if not (Path(directory) / "model_index.json").exists():
        raise ReNegError(f"'{directory}' is not a diffusers pipeline directory (no model_index.json): "
                         "pass a directory saved with save_pretrained, a cached hub id, or a built-in name")
    check_pipeline_folder(Path(directory))
    extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        try:
            return DiffusionPipeline.from_pretrained(directory, dtype=dtype, local_files_only=True, **extra)
        except TypeError:  # pipelines without a safety checker reject the extra arguments
            return DiffusionPipeline.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except ReNegError:
        raise
    except Exception as error:  # noqa: BLE001 - a folder that diffusers cannot load is the user's input
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ReNegError(f"the pipeline in '{directory}' cannot be loaded ({type(error).__name__}: {reason[:300]}): "
                         "is it complete? save it again with save_pretrained or download it again") from None


#: Libraries whose classes a pipeline's components may name: anything else is the folder's own code.
KNOWN_LIBRARIES = ("diffusers", "transformers", "sentencepiece", "tokenizers", None)


def check_pipeline_folder(directory: Path) -> None:
    """Refuse, in one line, a ``model_index.json`` that is not JSON or names a component of custom code (a
    module of the folder's own: reneg never runs a model's code) or a component folder that is missing."""
    index_file = directory / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ReNegError(f"'{index_file}' is not valid JSON ({error}): save the pipeline again or "
                         "download it again") from None
    if not isinstance(index, dict):
        raise ReNegError(f"'{index_file}' must hold a JSON object: save the pipeline again or download it again")
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value == [None, None]:
            continue
        library = value[0]
        if library not in KNOWN_LIBRARIES:
            raise ReNegError(f"component '{name}' of '{directory}' is custom code (module '{library}'), which "
                             "reneg never runs: use a pipeline of diffusers' and transformers' own classes")
        if not (directory / name).is_dir():
            raise ReNegError(f"'{directory}' has no '{name}/' folder although model_index.json names it: "
                             "the pipeline is incomplete; save it again or download it again")


def _prepare(pipe, *, device: torch.device, dtype: torch.dtype):
    """The family's sampler (DDIM for SD), everything frozen and in eval mode, on the device and dtype of the policy."""
    family = family_for(pipe)  # an unsupported pipeline is refused here, in one line
    family.use_sampler()
    for module in pipe.components.values():  # each component: a checkpoint may store them in mixed dtypes
        if isinstance(module, torch.nn.Module) and getattr(module, "dtype", dtype) != dtype:
            module.to(dtype=dtype)
    pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_model(model: str | None = None, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load ``model``: a built-in name, a diffusers pipeline directory, or a hub id in the local cache.

    No ``model`` means the embedded default. Never downloads: a hub id missing from the cache
    raises :class:`ReNegError` that says how to make it available.
    """
    name = model or default_model()
    device = torch.device(device)
    if name in MODELS:
        builtin = MODELS[name]
        pipe = builtin.build() if builtin.build else _from_pretrained(builtin.directory(), dtype=dtype)
        return LoadedModel(_prepare(pipe, device=device, dtype=dtype), name, builtin.defaults())
    directory = resolve(name, what="model")
    pipe = _from_pretrained(directory, dtype=dtype)
    return LoadedModel(_prepare(pipe, device=device, dtype=dtype), name, ModelDefaults())


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Text-encoder outputs of ``prompts``, (B, L, D), exactly as the pipeline's own ``encode_prompt``."""
    return family_for(pipe).encode(prompts).embeds


def _listing(config=None) -> str:
    default, models = default_model(), builtin_models()
    width = max(map(len, models), default=0)
    return "\n".join(f"{name:{width}s}  {builtin.description}{' (default)' if name == default else ''}"
                     for name, builtin in models.items())


COMMAND = builtin_command("models", None, _listing)
