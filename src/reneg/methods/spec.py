"""The spec grammar of methods: ``name``, ``name=ARG``, either with ``@GS`` (``reneg eval --methods``,
``reneg generate --method``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..errors import ReNegError
from ..models.loading import LoadedModel
from .base import METHODS, Method, MethodEntry, own_guidance_scale


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


def parse_method_spec(text: str, *, guidance_suffix: bool = True) -> MethodSpec:
    """Parse ``name``, ``name=ARG``, ``name@GS`` or ``name=ARG@GS``; unknown names and bad arguments are ReNegError.

    ``guidance_suffix=False`` for a spec that a flag's free text became (``--negative-prompt "contact @5"``):
    an ``@`` there is the user's text, not a guidance scale."""
    text = text.strip()
    body, guidance_scale = _guidance_suffix(text) if guidance_suffix else (text, None)
    name, equals, argument = body.partition("=")
    if name not in METHODS:
        raise METHODS.unknown(name or text, [entry.usage for entry in METHODS.values()])
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


def with_own_scale(spec: MethodSpec, method: Method) -> MethodSpec:
    """``spec`` with the method's own guidance scale where it gives none
    (:func:`~reneg.methods.base.own_guidance_scale`)."""
    if spec.guidance_scale is not None:
        return spec
    scale = own_guidance_scale(method)
    return spec if scale is None else replace(spec, guidance_scale=scale)
