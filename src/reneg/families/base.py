"""The registry of families: which :class:`~reneg.core.family.Family` serves a loaded pipeline."""

from __future__ import annotations

import importlib

from ..core.family import Family
from ..errors import ReNegError
from ..registry import Registry

#: The modules of the built-in families, imported (and so registered) on the first read of :data:`FAMILIES`:
#: each imports its diffusers pipeline, and together they cost seconds that a command's ``--help`` need not pay.
BUILTIN = ("sd", "sdxl", "sd3", "flux", "controlnet", "animatediff", "text_to_video", "pixart")


def _import_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"{__package__}.{name}")


#: Pipeline class name -> the family that serves it (the built-in ones and plugins' loaded on the first read).
FAMILIES: Registry[type[Family]] = Registry("pipeline class", load=_import_builtin)


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: ``family_for`` gives ``cls`` for pipelines whose class is one of ``cls.pipeline_classes``."""
    for name in cls.pipeline_classes:
        FAMILIES.add(name, cls)
    return cls


def supported_pipelines() -> dict[str, str]:
    """Pipeline class name -> its family's description."""
    return {name: cls.description for name, cls in FAMILIES.items()}


def family_for(pipe) -> Family:
    """The family of ``pipe`` (cached on the pipeline); an unsupported pipeline is a one-line ReNegError."""
    cached = getattr(pipe, "_reneg_family", None)
    if cached is not None:
        return cached
    cls = FAMILIES.get(type(pipe).__name__)
    if cls is None:
        supported = ", ".join(f"{name} ({description})" for name, description in supported_pipelines().items())
        raise ReNegError(f"pipeline {type(pipe).__name__} is not supported yet: reneg supports {supported}")
    family = cls(pipe)
    try:
        pipe._reneg_family = family
    except AttributeError:  # a pipeline that refuses new attributes: build it each time
        pass
    return family
