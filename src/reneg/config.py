"""Dataclass configs: one parser for the CLI and for TOML/YAML config files.

Each field's help text lives once, in ``field(metadata={"help": ...})``; the
CLI flags, ``--help`` and the config-file keys are derived from the fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from .errors import ReNegError

HELP = "help"


def arg(default=None, help: str = "", **metadata):
    """A dataclass field with its help text (and, e.g., ``flag="--x"`` or ``choices=[...]``)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={HELP: help, **metadata})
    return dataclasses.field(default=default, metadata={HELP: help, **metadata})


def _base_type(annotation) -> tuple[type, bool]:
    """(scalar type, is_list) of an annotation like ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return typing.get_args(annotation)[0], True
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        return _base_type(args[0])
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one flag per field of dataclass ``cls``; unset flags stay absent from the namespace."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        kind, is_list = _base_type(hints[f.name])
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get(HELP, "")
        if default is not None and default is not False and default != []:
            help_text += f" (default: {default})"
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif is_list:
            parser.add_argument(flag, action="append", type=kind, metavar=f.metadata.get("metavar"), **common)
        else:
            parser.add_argument(flag, type=kind, choices=f.metadata.get("choices"),
                                metavar=f.metadata.get("metavar"), **common)


def read_config_file(path: str | Path) -> dict:
    """Keys and values of a TOML or YAML config file (keys as the flags, with - or _)."""
    path = Path(path)
    if not path.is_file():
        raise ReNegError(f"config file '{path}' does not exist: pass an existing .toml or .yaml file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ReNegError(f"config file '{path}' must end in .toml, .yaml or .yml")
    except ReNegError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise ReNegError(f"config file '{path}' is malformed ({str(error).splitlines()[0]}): fix its syntax") from None
    if not isinstance(data, dict):
        raise ReNegError(f"config file '{path}' must hold a table of keys and values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def build_config(cls, namespace: argparse.Namespace, *, config_file: str | None = None):
    """``cls`` from a config file's values overridden by the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = read_config_file(config_file) if config_file else {}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ReNegError(f"config file '{config_file}' has unknown keys {', '.join(unknown)}: "
                         f"use the flag names of this command ({', '.join(sorted(names))})")
    values.update({k: v for k, v in vars(namespace).items() if k in names})
    try:
        return cls(**values)
    except TypeError as error:
        raise ReNegError(f"bad configuration: {error}") from None


def require(condition: bool, message: str) -> None:
    """Raise :class:`ReNegError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ReNegError(message)
