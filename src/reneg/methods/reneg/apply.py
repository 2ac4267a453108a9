"""The ``per-sample=FILE`` method of ``reneg eval`` and ``reneg generate --per-sample FILE`` (ReNeg Sec. 4.3).

Each batch's prompts are adapted from the global embedding FILE in one batched run
(:func:`reneg.methods.reneg.adapt.adapt_negatives`; seed 0 for the selection draws, which are keyed by the
prompt's text and so differ from the evaluated items' noise), then each image is generated with its prompt's
embedding.

Where the caller gives the method an output directory (``out``: ``reneg eval`` sets its ``--out``, ``reneg
generate`` its own), each prompt's embedding is saved as
``<out>/per-sample/<global file hash>-<settings hash>/<sha256 of the prompt>.safetensors`` (with the metadata
of ``reneg adapt``'s files) and a rerun loads it instead of adapting again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config import arg
from ...core.rollout import guided_images
from ...embedding import NegativeEmbedding
from ...errors import ReNegError, why_not_a_file
from ...families import TextConditioning
from ...identity import file_identity
from ...models.device import PRECISIONS
from ...models.loading import LoadedModel
from ..base import Method, register_method
from . import adapt as adapting

logger = logging.getLogger(__name__)

#: The adaptation inside ``reneg eval`` / ``generate``: ``reneg adapt``'s defaults (Algorithm 1's N = 10, P = 3),
#: K = 4 selection draws, seed 0; lr and grad window from the file (see
#: :func:`reneg.methods.reneg.adapt.resolve_settings`).
RECIPE = {"adapt_steps": 10, "patience": 3, "selection_draws": 4, "seed": 0}


@dataclass
class PerSampleMethod:
    """Per-sample negative embeddings adapted from ``start`` for each batch's prompts, then generation with them.

    Args:
        path: the global embedding file.
        identity: what decides the images besides the shared settings.
        out: where adapted embeddings are saved and reused (None: kept in memory only).
    """

    path: str
    identity: str
    out: Path | None = None
    _memory: dict = field(default_factory=dict, repr=False)
    _loaded: tuple | None = field(default=None, repr=False)

    def _load(self, model: LoadedModel):
        """The start (one row), its metadata, the reward and the files' base metadata (once)."""
        if self._loaded is None:
            start, metadata = adapting.load_start(model, self.path)
            reward, name, reward_model = adapting.build_adapt_reward(model, metadata)
            self._loaded = (start, metadata, reward, name, reward_model)
        return self._loaded

    def _directory(self, settings: adapting.AdaptSettings, reward: str, model: LoadedModel) -> Path | None:
        if self.out is None:
            return None
        key = hashlib.sha256(f"{settings.identity()}|{reward}|{model.name}".encode()).hexdigest()[:12]
        return Path(self.out) / "per-sample" / f"{self.identity.split(':')[1]}-{key}"

    def embeddings(self, model: LoadedModel, prompts: list[str], *, guidance_scale: float, steps: int,
                   resolution: int) -> torch.Tensor:
        """(B, L, D) per-sample embeddings of ``prompts``: saved or remembered ones, the rest adapted in one run."""
        start, metadata, reward, name, reward_model = self._load(model)
        settings = adapting.resolve_settings(model, metadata, steps=steps, guidance_scale=guidance_scale,
                                             resolution=resolution, **RECIPE)
        directory = self._directory(settings, name, model)
        found = {}
        for prompt in dict.fromkeys(prompts):
            remembered = self._memory.get((settings, prompt))
            path = None if directory is None else directory / adapting.prompt_file_name(prompt)
            if remembered is None and path is not None and path.is_file():
                saved = NegativeEmbedding.load(path)
                meta = saved.metadata
                if meta.get("adapt_settings") == settings.identity() and meta.get("prompt") == prompt:
                    remembered = saved.tensor
            if remembered is not None:
                found[prompt] = remembered
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            base = adapting.base_metadata(model, settings, start=self.path, start_metadata=metadata, reward=name,
                                          reward_model=reward_model, precision=_precision(model))
            for adapted in adapting.adapt_negatives(model.family, reward, missing, start, settings):
                logger.info("per-sample %s", adapted.summary())
                if directory is not None:
                    adapting.adapted_embedding(adapted, base=base).save(directory /
                                                                        adapting.prompt_file_name(adapted.prompt))
                found[adapted.prompt] = adapted.embedding
        for prompt, tensor in found.items():
            self._memory[(settings, prompt)] = tensor
        return torch.stack([found[p] for p in prompts])

    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *, guidance_scale: float,
               steps: int) -> torch.Tensor:
        family = model.family
        resolution = family.resolution_of(latents)
        negatives = self.embeddings(model, prompts, guidance_scale=guidance_scale, steps=steps,
                                    resolution=resolution)
        start = self._load(model)[0]
        pooled = None if start.pooled is None else start.pooled.expand(len(prompts), -1)
        settings = adapting.resolve_settings(model, self._load(model)[1], steps=steps,
                                             guidance_scale=guidance_scale, resolution=resolution, **RECIPE)
        return guided_images(family, prompts, TextConditioning(negatives, pooled), latents,
                             guidance_scale=guidance_scale, steps=steps, resolution=resolution,
                             rule=settings.rule(family))


def _precision(model: LoadedModel) -> str:
    return next((name for name, dtype in PRECISIONS.items() if dtype == model.family.dtype), "fp32")


def _check_file(argument: str) -> None:
    if not Path(argument).is_file():
        raise ReNegError(f"method 'per-sample={argument}': global negative embedding file {argument} "
                         f"{why_not_a_file(argument)}: "
                         "pass the .safetensors (or .pt) file that `reneg train` wrote")


def per_sample_identity(path: str) -> str:
    """``per-sample:<file hash>:<recipe hash>``: saved images and embeddings stay valid while both are unchanged."""
    recipe = hashlib.sha256(repr(sorted(RECIPE.items())).encode()).hexdigest()[:8]
    return f"per-sample:{file_identity(path).split(':')[1]}:{recipe}"


@register_method("per-sample", argument="FILE", check=_check_file,
                 description="per-sample embeddings adapted from a global one (ReNeg Algorithm 1), saved in "
                             "<out>/per-sample/ and reused")
def _per_sample(argument: str | None, model: LoadedModel) -> Method:
    return PerSampleMethod(argument, per_sample_identity(argument))


@dataclass
class PerSampleFlags:
    """``reneg generate``'s flag for per-sample embeddings: an alias of ``--method per-sample=FILE``."""

    per_sample: str | None = arg(None, "adapt a per-sample embedding to each prompt from this global embedding "
                                       "(ReNeg Algorithm 1; saved in --out/per-sample/), then generate with it "
                                       "(--method per-sample=FILE)", metavar="FILE")

    def alias_spec(self) -> str | None:
        """The spec this flag stands for, or None when it is not given."""
        return None if self.per_sample is None else f"per-sample={self.per_sample}"
