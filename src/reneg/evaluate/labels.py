"""Short labels of method specs for column heads, legends and plots; the full spec stays in results.json.

``embedding=runs/long/neg.safetensors@5`` reads ``neg@5``; ``per-sample=runs/g.safetensors`` reads
``per-sample:g``; a negative prompt reads as its quoted text, cut to 24 characters. Labels that would
collide fall back to the full specs.
"""

from __future__ import annotations

from pathlib import PurePath

from .methods import _guidance_suffix

_MAX_TEXT = 24


def _stem(argument: str) -> str:
    path = PurePath(argument)
    return path.stem if path.suffix else path.name or argument


def short_label(spec: str) -> str:
    """The short label of one method spec (see the module's docstring)."""
    body, scale = _guidance_suffix(spec.strip())
    name, equals, argument = body.partition("=")
    suffix = spec.strip()[len(body):]  # "@5" as written
    if not equals or not argument:
        label = name
    elif name == "embedding":
        label = _stem(argument)
    elif name == "negative-prompt":
        text = argument if len(argument) <= _MAX_TEXT else argument[:_MAX_TEXT - 1].rstrip(", ") + "…"
        label = f'"{text}"'
    else:
        label = f"{name}:{_stem(argument)}"
    return label + suffix if scale is not None else label


def short_labels(specs: list[str]) -> dict[str, str]:
    """spec -> its short label, unique over ``specs`` (colliding ones keep their full spec)."""
    labels = {spec: short_label(spec) for spec in specs}
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {spec: label if seen[label] == 1 else spec for spec, label in labels.items()}
