"""The thin ``reneg`` command: parse flags (and --config files) into a dataclass, call the library.

Bad input exits with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import warnings

from . import __version__
from .config import BUILTIN_COMMANDS, Command, add_config_arguments, build_config, output_paths
from .errors import ReNegError, StopRequested


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (the contract's bad-input rule)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def builtin_command(name: str) -> Command:
    """The built-in command ``name``, imported from its module (:data:`~reneg.config.BUILTIN_COMMANDS`)."""
    from importlib import import_module

    return import_module(BUILTIN_COMMANDS[name][0]).COMMAND


def builtin_commands() -> list[Command]:
    """reneg's own commands, each from where it is built: the method folders, generate, evaluate, listings."""
    return [builtin_command(name) for name in BUILTIN_COMMANDS]


#: Entry-point group of plugins' commands: each names a function returning (help, config class, run(config)).
COMMAND_GROUP = "reneg.commands"


def plugin_commands() -> list[Command]:
    """The commands plugins bring (the world's ``world-build`` and ``world-pairs``); a broken one is skipped."""
    from importlib.metadata import entry_points

    commands = []
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            help_text, config_class, run = entry.load()()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break reneg
            logging.getLogger("reneg").warning("reneg command plugin '%s' failed to load (%s)", entry.name, error)
            continue
        commands.append(Command(entry.name, help_text, config_class, run))
    return commands


def command_table() -> dict[str, Command]:
    """The one table of commands: name -> :class:`~reneg.config.Command` (a plugin's may replace a built-in)."""
    return {command.name: command for command in [*builtin_commands(), *plugin_commands()]}


def _is_main_process() -> bool:
    """Whether this is the one process of a run, or rank 0 of ``accelerate launch`` / ``torchrun``."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _run(command: Command, args) -> None:
    """Build the command's config from the flags (and --config), run it, print what it returns."""
    from .io import exclusive  # (torch: not at import time, --help stays light)

    config = build_config(command.config, args, config_file=args.config) if command.config else None
    with contextlib.ExitStack() as locks:  # one writer per output: a second run on the same --out is refused
        for flag, path in output_paths(config) if _is_main_process() else ():  # the ranks of one run share it
            locks.enter_context(exclusive(path, flag=flag))
        result = command.run(config)
    if result is not None:
        print(result)


#: What ``reneg --help`` says first.
DESCRIPTION = ("reneg: learn and apply negative guidance for diffusion models - learned negative embeddings "
               "(ReNeg), diffusion-negative prompts (DNP) and negative-preference weights (Diffusion-NPO), "
               "their evaluation and their export. `reneg COMMAND --help` shows a command's flags.")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``argv``'s command with all its flags, and every other command's name and help only: a
    command's module (torch, diffusers: seconds) is imported only when that command is chosen."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((word for word in argv if not word.startswith("-")), None)  # no top-level flag takes a value
    parser = OneLineParser(prog="reneg", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"reneg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    plugins = {command.name: command for command in plugin_commands()}  # a plugin's may replace a built-in
    for name in [*BUILTIN_COMMANDS, *(name for name in plugins if name not in BUILTIN_COMMANDS)]:
        if name != chosen:
            help_text = plugins[name].help if name in plugins else BUILTIN_COMMANDS[name][1]
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        command = plugins.get(name) or builtin_command(name)
        parsed = sub.add_parser(name, help=command.help, description=command.help)
        parsed.set_defaults(_command=command)
        if command.config is not None:
            parsed.add_argument("--config", metavar="FILE", help="TOML or YAML file with the same keys as the flags")
            add_config_arguments(parsed, command.config)
    return parser


def _quiet_loading() -> None:
    """No loading progress bars from diffusers / transformers: stderr is for errors (one line) and reneg's bars."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


#: Other libraries' loggers: only their errors reach stderr.
NOISY_LOGGERS = ("diffusers", "transformers", "accelerate", "open_clip", "timm", "torch.distributed",
                 "huggingface_hub", "PIL", "urllib3", "matplotlib")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest's capsys swaps it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def _only_reneg_info(record: logging.LogRecord) -> bool:
    """reneg's own INFO lines pass; other libraries' only from WARNING up."""
    return record.name == "reneg" or record.name.startswith("reneg.") or record.levelno >= logging.WARNING


def _configure_logging() -> None:
    """reneg's logger prints INFO; the root stays at WARNING (open_clip logs INFO on it); noisy libraries at ERROR."""
    root = logging.getLogger()
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_only_reneg_info)
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("reneg").setLevel(logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _one_line(text: str) -> str:
    """A message folded onto one line."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


#: errno of an OSError that is the user's path or disk, and what to do about it.
OS_ERROR_ADVICE = {
    errno.ENOSPC: "free some disk space or choose another --out location",
    errno.EDQUOT: "free some disk space or choose another --out location",
    errno.EFBIG: "choose another --out location",
    errno.EROFS: "choose a writable --out location",
    errno.EACCES: "choose a location you may write to, or fix its permissions",
    errno.EPERM: "choose a location you may write to, or fix its permissions",
    errno.EISDIR: "it is a directory: pass a file path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.ENOENT: "check the path",
    errno.EEXIST: "remove it or choose another path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ELOOP: "check the path's symbolic links",
}


def _os_error_message(error: OSError, out: str | None = None) -> str | None:
    """One line for an OSError about a user's path or disk, or None when it is not one; ``out`` (the command's
    --out) names the place where the error itself names none (a write that fills the disk)."""
    advice = OS_ERROR_ADVICE.get(error.errno)
    if advice is None:
        return None
    reason = error.strerror or _one_line(error) or type(error).__name__
    if error.filename is None:
        return f"{reason.lower()}{f' while writing --out {out}' if out else ''}: {advice}"
    return f"'{error.filename}': {reason.lower()}: {advice}"


def _fail(command: str, message: str, status: int) -> int:
    print(f"reneg{' ' + command if command else ''}: error: {_one_line(message)}", file=sys.stderr)
    return status


def _internal_error(command: str, error: BaseException, *, debug: bool) -> int:
    """One line for an unexpected exception (exit 1), or the exception itself under RENEG_DEBUG=1."""
    if debug:
        raise error
    message = _one_line(error) or "(no message)"
    return _fail(command, f"internal error: {type(error).__name__}: {message} "
                          "(set RENEG_DEBUG=1 for the traceback; please report it)", 1)


def run_command(args) -> int:
    """Run the parsed command; every failure becomes one line on stderr and an exit status.

    Bad input (:class:`ReNegError`, an unusable path or a full disk) exits 2, Ctrl-C 130, and
    anything else 1 as an internal error, which ``RENEG_DEBUG=1`` re-raises with its traceback.
    """
    debug = os.environ.get("RENEG_DEBUG", "") not in ("", "0")
    try:
        _quiet_loading()  # imports diffusers and transformers, which set their loggers' levels: configure after
        _configure_logging()
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            _run(args._command, args)
    except ReNegError as error:
        return _fail(args.command, str(error), 2)
    except StopRequested as error:  # a training loop stopped between steps and saved
        return _fail(args.command, str(error), error.exit_status)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted (Ctrl-C); files written so far are complete, "
                                   "rerun to redo them", 130)
    except BrokenPipeError:  # the reader stopped reading (`reneg models | head`): nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush of stdout at exit would fail again
        return 0
    except OSError as error:
        message = _os_error_message(error, getattr(args, "out", None))
        if message is None:
            return _internal_error(args.command, error, debug=debug)
        return _fail(args.command, message, 2)
    except Exception as error:  # noqa: BLE001 - the one place that turns any failure into one line
        return _internal_error(args.command, error, debug=debug)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``reneg``; returns the exit status (0; 2 for bad input; 1 for an internal error)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser(argv).parse_args(argv)  # imports the chosen command's module: seconds
    except KeyboardInterrupt:
        words = sys.argv[1:] if argv is None else argv
        command = next((word for word in words if not word.startswith("-")), None)
        return _fail(command or "", "interrupted (Ctrl-C) while starting; nothing was written", 130)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
