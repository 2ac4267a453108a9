"""The ways to apply a negative: the method protocol, the shared image path and the registry of methods.

A method turns a batch of prompts and their initial latents x_T into images at
a guidance scale, through the one rollout (:mod:`reneg.core.rollout`). The
baselines (:mod:`reneg.methods.baselines`) and each paper's folder register
theirs with :func:`register_method`; ``reneg eval`` and ``reneg generate`` take
them by spec (:mod:`reneg.methods.spec`) and need no change for a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..core.guidance import CFG, Rule
from ..core.nag import NAGRule, learned_scale
from ..core.rollout import guided_images as rollout_images
from ..families import TextConditioning
from ..models.loading import LoadedModel
from ..registry import Registry

# ---------------------------------------------------------------- the protocol and the shared image path


def own_guidance_scale(method) -> float | None:
    """The scale a method runs at when none is asked (no ``@GS``, no ``--guidance-scale``), or None: the model's.

    A method guided by NAG (:class:`~reneg.core.nag.NAGRule`) has its own: NAG's s, the one a NAG-learned file
    records, else NAG's default (a model's CFG scale is no NAG scale). ``reneg generate``, ``reneg eval`` and the UI
    all ask this, so a method's default is the same everywhere."""
    if isinstance(getattr(method, "rule", None), NAGRule):
        return learned_scale(getattr(method, "metadata", None) or {})
    return None


class Method(Protocol):
    """An evaluated method: images for prompts from given x_T at a guidance scale.

    ``identity`` names what, besides the shared settings, decides its images (a
    file's hash, a text); the runner reuses saved images only while it is unchanged.
    """

    identity: str

    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *,
               guidance_scale: float, steps: int) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] for ``prompts`` from x_T = ``latents`` (B, C, h, w)."""
        ...


def guided_images(model: LoadedModel, prompts: list[str], negative: TextConditioning, latents: torch.Tensor, *,
                  guidance_scale: float, steps: int, rule: Rule = CFG) -> torch.Tensor:
    """DDIM + CFG (or ``rule``: NAG) from x_T with a one-row negative, decoded to [0, 1]: the one rollout, no
    gradient."""
    family = model.family
    return rollout_images(family, prompts, negative, latents, guidance_scale=guidance_scale, steps=steps,
                          resolution=family.resolution_of(latents), rule=rule)


@dataclass
class FixedNegative:
    """One negative for every prompt: null text, a negative prompt, or a learned file (one-row conditioning),
    applied by ``rule`` (CFG; NAG for a file learned for it or a ``nag-*`` method)."""

    negative: TextConditioning
    identity: str
    rule: Rule = CFG
    #: the file's metadata, for a learned negative (its ``guidance_scale`` is NAG's default s in generate)
    metadata: dict | None = None

    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *,
               guidance_scale: float, steps: int) -> torch.Tensor:
        return guided_images(model, prompts, self.negative, latents, guidance_scale=guidance_scale, steps=steps,
                             rule=self.rule)


# ---------------------------------------------------------------- the registry

#: factory(argument, model) -> Method; argument is None for methods that take none.
MethodFactory = Callable[[str | None, LoadedModel], Method]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Args:
        name: the spec's name (before ``=``).
        factory: builds the method for a loaded model.
        argument: metavar of the required argument (``TEXT``, ``FILE``), or None when it takes none.
        baseline: a baseline is swept over guidance scales by ``--guidance-sweep``; the others are
            learned methods, compared against the baselines at the same and at the best scale.
        check: cheap validation of the argument before the model loads (e.g. the file exists).
        optional: the argument may be left out (``dnp`` and ``dnp=CAPTION_FILE``); the factory then gets None.
    """

    name: str
    factory: MethodFactory
    argument: str | None = None
    baseline: bool = False
    description: str = ""
    check: Callable[[str], None] | None = None
    optional: bool = False

    @property
    def usage(self) -> str:
        if self.argument is None:
            return self.name
        return f"{self.name}[={self.argument}]" if self.optional else f"{self.name}={self.argument}"


#: The registered methods (plugins' included once read).
METHODS: Registry[MethodEntry] = Registry("method", hint="(any may end in @GS, e.g. null@12)")


def register_method(name: str, *, argument: str | None = None, baseline: bool = False, description: str = "",
                    check: Callable[[str], None] | None = None,
                    optional: bool = False) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator registering ``factory(argument, model) -> Method`` as the method ``name``."""

    return METHODS.register(name, lambda factory: MethodEntry(name, factory, argument, baseline, description, check,
                                                              optional))


def available_methods() -> dict[str, str]:
    """Usage strings (``name`` or ``name=ARG``) of the registered methods mapped to their descriptions."""
    return {entry.usage: entry.description for entry in METHODS.values()}
