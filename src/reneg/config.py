"""Dataclass configs: the settings every command shares, one parser for the CLI and for TOML/YAML files.

Each field's help text lives once, in ``field(metadata={"help": ...})``; the
CLI flags, ``--help`` and the config-file keys are derived from the fields.
The model and sampling settings are declared once (:class:`Setting`) and
inherited by every command's config (:class:`ModelSettings`,
:class:`SamplingSettings`, ...); each range is checked in one place,
:func:`check_ranges`, for the CLI, config files and Python alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Callable

from .errors import ReNegError

HELP = "help"
#: The help of every command's ``--model`` (what :func:`reneg.models.loading.load_model` accepts).
MODEL_HELP = "diffusers pipeline directory, cached hub id or built-in name (none: the embedded default)"


def arg(default=None, help: str = "", **metadata):
    """A dataclass field with its help text and metadata checked by :func:`build_config`.

    Metadata: ``flag="--x"``, ``aliases=("--y",)`` (other names of the flag: one name per concept across
    commands, the older name kept), ``positional=True`` (an optional positional argument instead of a flag),
    ``choices=[...]``, ``metavar``, ``cli=False`` (config files only), ranges
    ``min``/``min_exclusive``/``max``/``max_exclusive``/``multiple_of``, and ``output="dir"`` or
    ``"file"`` for a path the command writes (checked for writability before anything runs).
    """
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
        aliases = tuple(f.metadata.get("aliases", ()))
        if aliases:
            help_text += f" (also {', '.join(aliases)})"
        if f.metadata.get("positional"):  # e.g. `reneg export FILE`: optional here, required by the config class
            parser.add_argument(f.name, nargs="?", type=kind, default=argparse.SUPPRESS,
                                metavar=f.metadata.get("metavar"), help=help_text)
            continue
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            parser.add_argument(flag, *aliases, action=argparse.BooleanOptionalAction, **common)
        elif is_list:
            parser.add_argument(flag, *aliases, action="append", type=kind, metavar=f.metadata.get("metavar"),
                                **common)
        else:
            parser.add_argument(flag, *aliases, type=kind, choices=f.metadata.get("choices"),
                                metavar=f.metadata.get("metavar"), **common)


def read_config_file(path: str | Path) -> dict:
    """Keys and values of a TOML or YAML config file (keys as the flags, with - or _)."""
    path = Path(path)
    if path.is_dir():
        raise ReNegError(f"config file '{path}' is a directory: pass a .toml or .yaml file")
    if not path.is_file():
        raise ReNegError(f"config file '{path}' does not exist: pass an existing .toml or .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
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
    except OSError as error:
        raise ReNegError(f"config file '{path}' cannot be read ({error.strerror or error}): "
                         "check its permissions or pass another file") from None
    except UnicodeDecodeError:
        raise ReNegError(f"config file '{path}' is not UTF-8 text: save it as UTF-8 TOML or YAML") from None
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise ReNegError(f"config file '{path}' is malformed ({first_line(error)}): fix its syntax") from None
    if not isinstance(data, dict):
        raise ReNegError(f"config file '{path}' must hold a table of keys and values")
    bad = [key for key in data if not isinstance(key, str)]  # YAML keys may be null, numbers, lists...
    if bad:
        raise ReNegError(f"config file '{path}' has a key {bad[0]!r} that is not a name: use the flag names as keys")
    return {key.replace("-", "_"): value for key, value in data.items()}


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# -- validation of values, driven by the fields' annotations and metadata ---------------------------
#: Range metadata of ``arg(...)``: key -> (test that passes, how the message states the bound).
RANGES = {
    "min": (lambda value, bound: value >= bound, ">="),
    "min_exclusive": (lambda value, bound: value > bound, ">"),
    "max": (lambda value, bound: value <= bound, "<="),
    "max_exclusive": (lambda value, bound: value < bound, "<"),
}
KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}


def _optional(annotation) -> bool:
    return type(None) in typing.get_args(annotation)


def _wrong(name: str, kind: type, value, *, is_list: bool = False) -> ReNegError:
    name_of_kind = KIND_NAMES.get(kind, kind.__name__)
    expected = f"a list of {name_of_kind} values" if is_list else name_of_kind
    return ReNegError(f"{name} must be {expected}, got {value!r}")


def _to_int(value, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _wrong(name, int, value)


def _to_float(value, name: str) -> float:
    """A finite float from an int, a float or a numeric string (YAML reads ``1e-2`` as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _wrong(name, float, value)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise _wrong(name, float, value) from None
    if not math.isfinite(number):
        raise ReNegError(f"{name} must be a finite number, got {value!r}")
    return number


def _to_str(value, name: str) -> str:
    """Strings as they are; a number written without quotes in a config file is taken as its text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _wrong(name, str, value)


def _to_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _wrong(name, bool, value)


def _to_dict(value, name: str) -> dict:
    if isinstance(value, dict):
        return value
    raise _wrong(name, dict, value)


CONVERTERS = {int: _to_int, float: _to_float, str: _to_str, bool: _to_bool, dict: _to_dict}


def _check_range(metadata, value, name: str) -> None:
    """The ``min``/``min_exclusive``/``max``/``max_exclusive``/``multiple_of``/``choices`` of a field."""
    for key, (holds, relation) in RANGES.items():
        if key in metadata and not holds(value, metadata[key]):
            raise ReNegError(f"{name} must be {relation} {metadata[key]}, got {value}")
    multiple = metadata.get("multiple_of")
    if multiple and value % multiple:
        raise ReNegError(f"{name} must be a multiple of {multiple}, got {value}")
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ReNegError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_value(f: dataclasses.Field, annotation, value, *, name: str):
    """``value`` of field ``f`` converted to its annotated type and checked against its range metadata.

    A plain value for a list field becomes a one-element list (``prompt = "a red circle"``).
    ``name`` says where the value came from in messages (``--lr`` or ``config key 'lr'``).
    """
    kind, is_list = _base_type(annotation)
    if value is None:
        if _optional(annotation):
            return None
        raise ReNegError(f"{name} must be {KIND_NAMES.get(kind, 'set')}, got nothing: give a value or leave it out")
    convert = CONVERTERS.get(kind, lambda v, n: v)
    if is_list:
        if isinstance(value, dict) or isinstance(value, (set, bytes)):
            raise _wrong(name, kind, value, is_list=True)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        items = [convert(item, name) for item in items]
        for item in items:
            _check_range(f.metadata, item, name)
        return items
    value = convert(value, name)
    _check_range(f.metadata, value, name)
    return value


def check_output_path(value: str, *, kind: str, name: str) -> None:
    """Refuse an output path that cannot be written before anything heavy runs.

    ``kind`` is ``"dir"`` (the command writes files into it) or ``"file"``.
    """
    path = Path(value).expanduser()
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ReNegError(f"{name} '{path}' is a file, not a directory: pass a directory path")
    if kind == "file" and path.is_dir():
        raise ReNegError(f"{name} '{path}' is a directory: pass a file path, e.g. {path / 'negative.safetensors'}")
    ancestor = path if kind == "dir" else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReNegError(f"{name} '{path}' cannot be created: '{ancestor}' is a file, not a directory; "
                         "choose another location")
    try:  # a real probe: permissions, read-only mounts and /proc or /sys all show here (even for root)
        fd, probe = tempfile.mkstemp(prefix=".reneg-probe-", dir=ancestor)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ReNegError(f"{name} '{path}' is not writable (creating a file in '{ancestor}' fails: {reason}): "
                         "choose a writable location") from None
    os.close(fd)
    os.remove(probe)


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def check_values(cls, values: dict, *, names: dict[str, str]) -> dict:
    """Each of ``values`` (field name -> raw value) converted and checked; ``names[key]`` names it in messages."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {key: check_value(fields[key], hints[key], value, name=names[key]) for key, value in values.items()}


def build_config(cls, namespace: argparse.Namespace, *, config_file: str | None = None):
    """``cls`` from a config file's values overridden by the flags given on the command line.

    Every value is converted to its field's type and checked against its range
    metadata (and output paths for writability) before the dataclass is built.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = read_config_file(config_file) if config_file else {}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ReNegError(f"config file '{config_file}' has unknown keys {', '.join(unknown)}: "
                         f"use the flag names of this command ({', '.join(sorted(fields))})")
    values = check_values(cls, values, names={key: f"config key '{key}'" for key in values})
    flags = {k: v for k, v in vars(namespace).items() if k in fields}
    values.update(check_values(cls, flags, names={key: _flag_name(fields[key]) for key in flags}))
    try:
        config = cls(**values)
    except TypeError as error:
        raise ReNegError(f"bad configuration: {first_line(error)}") from None
    for name, f in fields.items():
        if f.metadata.get("output") and getattr(config, name) is not None:
            check_output_path(str(getattr(config, name)), kind=f.metadata["output"], name=_flag_name(f))
    return config


def output_paths(config) -> list[tuple[str, str]]:
    """(flag, path) of each output a command's config names (fields declared with ``output=...``)."""
    if config is None:
        return []
    return [(_flag_name(f), str(getattr(config, f.name))) for f in dataclasses.fields(config)
            if f.metadata.get("output") and getattr(config, f.name) is not None]


def require(condition: bool, message: str) -> None:
    """Raise :class:`ReNegError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ReNegError(message)


def check_ranges(config) -> None:
    """Every field's range metadata (``min``, ``max``, ``multiple_of``, ``choices``) on a built config: the one
    place a range is checked (``__post_init__`` of :class:`ModelSettings` runs it for every command's config)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or isinstance(value, bool):
            continue
        for item in value if isinstance(value, list) else [value]:
            _check_range(f.metadata, item, _flag_name(f))


# -- the settings every command shares ---------------------------------------------------------------
class Setting:
    """A setting declared once: its default, help text and range; calling it makes the dataclass field.

    A command may give it another default or a more specific help (``BATCH_SIZE(8, "prompts per optimizer
    step")``); the range stays the one declared here.
    """

    def __init__(self, default, help: str, **metadata):
        self.default, self.help, self.metadata = default, help, metadata

    def __call__(self, default=dataclasses.MISSING, help: str | None = None, **metadata) -> dataclasses.Field:
        return arg(self.default if default is dataclasses.MISSING else default, help or self.help,
                   **{**self.metadata, **metadata})


PRECISION_NAMES = ["fp32", "fp16", "bf16"]
MODEL = Setting(None, MODEL_HELP)
DEVICE = Setting("auto", "cpu, cuda, cuda:N or auto")
PRECISION = Setting("fp32", "dtype of the frozen models", choices=PRECISION_NAMES)
STEPS = Setting(None, "DDIM sampling steps", min=1)
GUIDANCE_SCALE = Setting(None, "CFG scale", min=0, max=100)
RESOLUTION = Setting(None, "image size in pixels, a multiple of 8 (default: the model's)", min=8, multiple_of=8)
SEED = Setting(0, "seed of a CPU generator drawing the initial latents as diffusers does", min=0, max=2**63 - 1)
TRAINING_SEED = Setting(0, "seed of prompts, timesteps and noise", min=0, max=2**32 - 1)
BATCH_SIZE = Setting(4, "images per forward pass", min=1)
PROMPT = Setting([], "a prompt (repeatable)")
PROMPTS = Setting(None, "prompts file (.txt one a line, .json, .tsv)", metavar="FILE")
REWARD = Setting(None, "reward name (see `reneg rewards`)")
REWARD_MODEL = Setting(None, "reward checkpoint: path or cached hub id", metavar="PATH_OR_ID")
GRAD_WINDOW = Setting(None, "t is drawn from the last K sampling steps (default: a third of --steps)", metavar="K",
                      min=1)
CONTROL_IMAGE = Setting(None, "ControlNet pipelines: the control image every image is conditioned on",
                        metavar="FILE")
NUM_FRAMES = Setting(None, "video pipelines: frames per video (default: 16, as diffusers)", min=1)
NUM_IMAGES = Setting(1, "images per prompt", min=1)
TRAIN_STEPS = Setting(120, "optimizer steps", metavar="N", min=1)
LR = Setting(None, "AdamW learning rate", min_exclusive=0)
LOG_EVERY = Setting(10, "log a line every N steps (0: never)", metavar="N", min=0)


@dataclasses.dataclass
class ModelSettings:
    """The model and where it runs: the first settings of every command."""

    model: str | None = MODEL()
    device: str = DEVICE()
    precision: str = PRECISION()

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass
class SamplingSettings(ModelSettings):
    """How images are sampled; None means the model's default (:meth:`reneg.models.LoadedModel.sampling`)."""

    steps: int | None = STEPS()
    guidance_scale: float | None = GUIDANCE_SCALE()
    resolution: int | None = RESOLUTION()
    seed: int = SEED()


@dataclasses.dataclass
class TrainingSettings(SamplingSettings):
    """A training rollout's sampling settings: t is drawn from the last ``grad_window`` steps."""

    grad_window: int | None = GRAD_WINDOW()
    seed: int = TRAINING_SEED()


@dataclasses.dataclass
class PromptSettings:
    """Prompts from ``--prompt`` (repeatable) and ``--prompts FILE``."""

    prompt: list[str] = PROMPT()
    prompts: str | None = PROMPTS()


@dataclasses.dataclass
class RewardSettings:
    """The reward a training run climbs."""

    reward: str | None = REWARD()
    reward_model: str | None = REWARD_MODEL()


@dataclasses.dataclass
class ConditionSettings:
    """Inputs beside the text some pipelines are conditioned on."""

    control_image: str | None = CONTROL_IMAGE()
    num_frames: int | None = NUM_FRAMES()


@dataclasses.dataclass
class GuidanceSettings:
    """The guidance rule the negative acts through: CFG (two passes) or NAG (attention space, one pass)."""

    guidance: str = arg("cfg", "cfg: classifier-free guidance, the scale is CFG's gamma (ReNeg Eq. 5); nag: "
                               "Normalized Attention Guidance in the cross-attention layers, for models run at "
                               "CFG 1 (distilled, few-step), the scale is NAG's s (reference examples: 5)",
                        choices=["cfg", "nag"])
    nag_tau: float = arg(2.5, "NAG: the clip of the guided/positive L1 norm ratio (the reference's default)",
                         min_exclusive=0, max=100)
    nag_alpha: float | None = arg(None, "NAG: blend of the guided attention with the prompt's (default: the "
                                        "reference's 0.5 for UNets, 0.25 for transformers)", min=0, max=1)
    nag_end: float = arg(1.0, "NAG: the fraction of the schedule it acts in, from the noisiest timestep "
                              "(the reference's nag_end)", min=0, max=1)

    def rule_settings(self) -> dict:
        """The settings :func:`reneg.core.nag.guidance_rule` takes."""
        return {"guidance": self.guidance, "tau": self.nag_tau, "alpha": self.nag_alpha, "end": self.nag_end}


# -- commands ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Command:
    """A ``reneg`` subcommand: its name, one line of help, its config class and ``run(config)``, whose result
    (when not None) the CLI prints. A built-in one takes its help from :data:`BUILTIN_COMMANDS`."""

    name: str
    help: str
    config: type | None
    run: Callable


#: reneg's own commands, in the order ``reneg --help`` lists them: name -> (the module whose ``COMMAND`` it is,
#: one line of help). The CLI imports a command's module only when that command is chosen: ``reneg --help``
#: imports none of them (torch and diffusers take seconds to import).
BUILTIN_COMMANDS = {
    "train": ("reneg.methods.reneg.train", "learn a global negative embedding (ReNeg Sec. 4.2)"),
    "adapt": ("reneg.methods.reneg.adapt", "per-sample negative embeddings (ReNeg Algorithm 1) for a prompt or each "
                                           "prompt of a file"),
    "generate": ("reneg.generate", "generate images with any method: null text, a negative prompt, a learned "
                                   "embedding, per-sample, DNP or NPO (--method SPEC)"),
    "dnp": ("reneg.methods.dnp.images", "diffusion-negative prompting: the DNS image, its caption n*, and the image "
                                        "of (p, n*)"),
    "npo": ("reneg.methods.npo.train", "train a negative-preference LoRA delta for the negative branch of CFG "
                                       "(Diffusion-NPO)"),
    "eval": ("reneg.evaluate.runner", "benchmark x methods x metrics: tables, win rates, a guidance sweep and an "
                                      "HTML report"),
    "compare": ("reneg.evaluate.compare", "a learned negative beside null text and the handcrafted prompt: picture "
                                          "and one line"),
    "efficiency": ("reneg.evaluate.efficiency", "parameter efficiency E(theta) of the negative embedding, the UNet "
                                                "and LoRA (ReNeg Sec. 4.1, Table 1), by random projections"),
    "export": ("reneg.export", "a learned negative in a host's layout: ComfyUI, InvokeAI, A1111/Forge or a "
                               "diffusers Hub folder"),
    "rewards": ("reneg.rewards.base", "list the registered rewards"),
    "models": ("reneg.models.loading", "list the built-in models"),
    "ui": ("reneg.ui.app", "a local web UI: methods side by side from one seed, each image scored (needs gradio)"),
}


def builtin_command(name: str, config: type | None, run: Callable) -> Command:
    """The built-in command ``name`` (its help from :data:`BUILTIN_COMMANDS`)."""
    return Command(name, BUILTIN_COMMANDS[name][1], config, run)

