"""Short labels of method specs for column heads, legends and plots; the full spec stays in results.json.

``embedding=runs/long/neg.safetensors@5`` reads ``neg@5``; ``per-sample=runs/g.safetensors`` reads
``per-sample:g``; a negative prompt reads as its quoted text, cut to 24 characters. Files of one stem are
told apart by their folders (``runs/wt/quick/negative.safetensors`` and ``runs/wt/long/negative.safetensors``
read ``quick/negative`` and ``long/negative``); labels that still collide fall back to the full specs.
"""

from __future__ import annotations

from pathlib import PurePath

from ..methods.spec import _guidance_suffix

_MAX_TEXT = 24


def _stem(argument: str, depth: int) -> str:
    path = PurePath(argument)
    name = path.stem if path.suffix else path.name or argument
    folders = path.parent.parts[len(path.parent.parts) - (depth - 1):] if depth > 1 else ()
    return "/".join([*folders, name])


def short_label(spec: str, depth: int = 1) -> str:
    """The short label of one method spec (see the module's docstring); ``depth`` - 1 folders name a file."""
    body, scale = _guidance_suffix(spec.strip())
    name, equals, argument = body.partition("=")
    suffix = spec.strip()[len(body):]  # "@5" as written
    if not equals or not argument:
        label = name
    elif name == "embedding":
        label = _stem(argument, depth)
    elif name == "negative-prompt":
        text = argument if len(argument) <= _MAX_TEXT else argument[:_MAX_TEXT - 1].rstrip(", ") + "…"
        label = f'"{text}"'
    else:
        label = f"{name}:{_stem(argument, depth)}"
    return label + suffix if scale is not None else label


def short_labels(specs: list[str]) -> dict[str, str]:
    """spec -> its short label, unique over ``specs``: colliding ones name more folders, then keep their spec."""
    labels = {spec: short_label(spec) for spec in specs}
    for depth in range(2, 1 + max((len(PurePath(s).parts) for s in specs), default=1)):
        colliding = _colliding(labels)
        if not colliding:
            break
        labels.update({spec: short_label(spec, depth) for spec in colliding})
    colliding = _colliding(labels)
    return {spec: spec if spec in colliding else label for spec, label in labels.items()}


def _colliding(labels: dict[str, str]) -> set[str]:
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {spec for spec, label in labels.items() if seen[label] > 1}
