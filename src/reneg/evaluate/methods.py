"""The methods of ``reneg eval --methods``: spec parsing (``name``, ``name=ARG``, either with ``@GS``) and a registry.

A method turns a batch of prompts and their initial latents x_T into images at
a guidance scale, through the one shared sampler (:mod:`reneg.sampling`).
Built-ins: ``null``, ``handcrafted``, ``negative-prompt=TEXT``,
``embedding=FILE``. Later methods (``per-sample=FILE``, ``dnp``, ``npo=DIR``)
register themselves with :func:`register_method`; the runner needs no change.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..embedding import NegativeEmbedding
from ..errors import ReNegError
from ..families import TextConditioning
from ..models import LoadedModel
from ..rollout import guided_images as rollout_images

# ---------------------------------------------------------------- the protocol and the shared image path


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
                  guidance_scale: float, steps: int) -> torch.Tensor:
    """DDIM + CFG from x_T with a one-row negative, decoded to [0, 1]: the one rollout, no gradient."""
    family = model.family
    return rollout_images(family, prompts, negative, latents, guidance_scale=guidance_scale, steps=steps,
                          resolution=family.resolution_of(latents))


@dataclass
class FixedNegative:
    """One negative for every prompt: null text, a negative prompt, or a learned file (one-row conditioning)."""

    negative: TextConditioning
    identity: str

    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *,
               guidance_scale: float, steps: int) -> torch.Tensor:
        return guided_images(model, prompts, self.negative, latents, guidance_scale=guidance_scale, steps=steps)


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


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, *, argument: str | None = None, baseline: bool = False, description: str = "",
                    check: Callable[[str], None] | None = None,
                    optional: bool = False) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator registering ``factory(argument, model) -> Method`` as the method ``name``."""

    def decorator(factory: MethodFactory) -> MethodFactory:
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered")
        METHODS[name] = MethodEntry(name, factory, argument, baseline, description, check, optional)
        return factory

    return decorator


def available_methods() -> dict[str, str]:
    """Usage strings (``name`` or ``name=ARG``) of the registered methods mapped to their descriptions."""
    return {entry.usage: entry.description for entry in METHODS.values()}


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class MethodSpec:
    """A parsed spec: ``text`` as given, ``name``, ``argument`` and the ``@GS`` guidance scale (None: the default)."""

    text: str
    name: str
    argument: str | None
    guidance_scale: float | None

    @property
    def entry(self) -> MethodEntry:
        return METHODS[self.name]

    @property
    def base(self) -> str:
        """The spec without its ``@GS`` suffix: what identifies the method itself."""
        return self.name if self.argument is None else f"{self.name}={self.argument}"


def _guidance_suffix(text: str) -> tuple[str, float | None]:
    """Split a trailing ``@GS`` off a spec (the last ``@`` followed by a number), else (text, None)."""
    body, at, tail = text.rpartition("@")
    if not at:
        return text, None
    try:
        guidance_scale = float(tail)
    except ValueError:
        return text, None
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ReNegError(f"method '{text}': the guidance scale after @ must be a finite number >= 0")
    return body, guidance_scale


def _unknown(name: str) -> ReNegError:
    choices = ", ".join(entry.usage for entry in METHODS.values())
    return ReNegError(f"unknown method '{name}': choose one of {choices} (any may end in @GS, e.g. null@12)")


def parse_method_spec(text: str) -> MethodSpec:
    """Parse ``name``, ``name=ARG``, ``name@GS`` or ``name=ARG@GS``; unknown names and bad arguments are ReNegError."""
    text = text.strip()
    body, guidance_scale = _guidance_suffix(text)
    name, equals, argument = body.partition("=")
    if name not in METHODS:
        raise _unknown(name or text)
    entry = METHODS[name]
    if entry.argument is None and equals:
        raise ReNegError(f"method '{text}': '{name}' takes no argument; write it as {entry.usage}")
    if entry.argument is not None and not argument and not (entry.optional and not equals):
        raise ReNegError(f"method '{text}' needs an argument: write it as {entry.usage}")
    if entry.check is not None and argument:
        entry.check(argument)
    return MethodSpec(text, name, argument if equals else None, guidance_scale)


def _starts_a_spec(piece: str) -> bool:
    name = re.split(r"[=@]", piece.strip(), maxsplit=1)[0]
    return name in METHODS


def split_method_list(values: list[str]) -> list[str]:
    """Comma-separated specs (from one or more ``--methods``); a piece that starts no known method continues
    the argument of the previous spec, if it has one: ``negative-prompt=blurry, low contrast`` stays one spec."""
    specs: list[str] = []
    for value in values:
        pieces = value.split(",")
        specs.append(pieces[0])
        for piece in pieces[1:]:
            if _starts_a_spec(piece) or "=" not in specs[-1]:
                specs.append(piece)
            else:
                specs[-1] += "," + piece
    return [spec.strip() for spec in specs if spec.strip()]


def parse_method_specs(values: list[str]) -> list[MethodSpec]:
    """All specs of ``--methods`` (see :func:`split_method_list`), parsed; duplicates or none are ReNegError."""
    specs = [parse_method_spec(text) for text in split_method_list(values)]
    if not specs:
        raise ReNegError("no methods given: pass --methods, e.g. --methods null,handcrafted")
    seen = set()
    for spec in specs:
        if spec.text in seen:
            raise ReNegError(f"method '{spec.text}' is given twice in --methods: give each spec once")
        seen.add(spec.text)
    return specs


def build_methods(specs: list[MethodSpec], model: LoadedModel) -> dict[str, Method]:
    """One :class:`Method` per distinct ``spec.base`` (``null`` and ``null@12`` share one)."""
    methods: dict[str, Method] = {}
    for spec in specs:
        if spec.base not in methods:
            methods[spec.base] = spec.entry.factory(spec.argument, model)
    return methods


# ---------------------------------------------------------------- built-ins


def _text_identity(text: str) -> str:
    return "text:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@register_method("null", baseline=True, description="the null text \"\" as negative (plain CFG)")
def _null(argument: str | None, model: LoadedModel) -> Method:
    return FixedNegative(model.family.null_text(), "null")


@register_method("handcrafted", baseline=True, description="the model's handcrafted negative prompt (N* of ReNeg)")
def _handcrafted(argument: str | None, model: LoadedModel) -> Method:
    text = model.defaults.handcrafted_negative
    return FixedNegative(model.family.encode([text]).to("cpu", torch.float32), _text_identity(text))


@register_method("negative-prompt", argument="TEXT", baseline=True, description="a negative prompt")
def _negative_prompt(argument: str | None, model: LoadedModel) -> Method:
    return FixedNegative(model.family.encode([argument]).to("cpu", torch.float32), _text_identity(argument))


def _check_embedding_file(argument: str) -> None:
    if not Path(argument).is_file():
        raise ReNegError(f"method 'embedding={argument}': negative embedding file {argument} does not exist: "
                         "pass the .safetensors (or .pt) file that `reneg train` wrote")


def file_identity(path: str | Path) -> str:
    """``sha256:<16 hex>`` of a file's bytes: saved images stay valid only while the file is unchanged."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


@register_method("embedding", argument="FILE", description="a learned negative embedding file",
                 check=_check_embedding_file)
def _embedding(argument: str | None, model: LoadedModel) -> Method:
    negative = NegativeEmbedding.load(argument).for_pipeline(model.pipe)
    return FixedNegative(TextConditioning.of(negative), file_identity(argument))
