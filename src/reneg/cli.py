"""The thin ``reneg`` command: parse flags (and --config files) into a dataclass, call the library.

Bad input exits with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from . import __version__
from .config import add_config_arguments, build_config
from .errors import ReNegError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (the contract's bad-input rule)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _train(args):
    from .train import TrainConfig, train
    from .listeners import log_listeners

    config = build_config(TrainConfig, args, config_file=args.config)
    train(config, listeners=log_listeners(config))
    print(config.out)


def _generate(args):
    from .generate import GenerateConfig, generate

    config = build_config(GenerateConfig, args, config_file=args.config)
    print(generate(config))


def _eval(args):
    from .evaluate import EvalConfig, evaluate

    config = build_config(EvalConfig, args, config_file=args.config)
    print(evaluate(config))


def _rewards(args):
    from .rewards import available_rewards

    for name, description in available_rewards().items():
        print(f"{name:16s} {description}")


def _models(args):
    from .models import BUILTIN_MODELS, DEFAULT_MODEL

    for name, builtin in BUILTIN_MODELS.items():
        print(f"{name:16s} {builtin.description}{' (default)' if name == DEFAULT_MODEL else ''}")


def _world(args):
    from .world.build import BuildConfig, build

    config = build_config(BuildConfig, args, config_file=args.config)
    print(build(config))


def _config_classes():
    from .world.build import BuildConfig
    from .evaluate import EvalConfig
    from .generate import GenerateConfig
    from .train import TrainConfig

    return {"train": TrainConfig, "generate": GenerateConfig, "eval": EvalConfig, "world-build": BuildConfig}


COMMANDS = {
    "train": (_train, "learn a global negative embedding (ReNeg Sec. 4.2)"),
    "generate": (_generate, "generate images with null text, a negative prompt or a learned embedding"),
    "eval": (_eval, "benchmark x methods x metrics: tables, win rates, a guidance sweep and an HTML report"),
    "rewards": (_rewards, "list the registered rewards"),
    "models": (_models, "list the built-in models"),
    "world-build": (_world, "rebuild every model of the embedded shapes world from scratch"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="reneg", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"reneg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    configs = _config_classes()
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name in configs:
            command.add_argument("--config", metavar="FILE", help="TOML or YAML file with the same keys as the flags")
            add_config_arguments(command, configs[name])
    return parser


def _quiet_loading() -> None:
    """No loading progress bars from diffusers / transformers: stderr is for errors (one line) and reneg's bars."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``reneg``; returns the exit status (0, or 2 for bad input)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _quiet_loading()
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            COMMANDS[args.command][0](args)
    except ReNegError as error:
        print(f"reneg {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
