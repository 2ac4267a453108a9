"""One registry type for everything reneg looks up by name, and the plugins that fill them.

Rewards, captioners, methods, prompt sets, models and families are each a :class:`Registry`:

    REWARDS = Registry("reward")

    @REWARDS.register("contrast", description="luminance std")
    def contrast(model, *, device, dtype): ...

    REWARDS["contrast"]        # the entry; an unknown name is a one-line ReNegError listing the choices
    REWARDS.names()            # sorted names, plugins' included

A name registered twice is refused in one line. Reading a registry (``[]``, ``get``, ``in``, ``names``,
``items``) first loads the plugins, once: every entry point of the group ``reneg.plugins`` names a function that
takes no argument and registers what its package brings into any of the registries (the shapes world is such a
plugin, ``reneg.world.plugin:register``)::

    [project.entry-points."reneg.plugins"]
    mine = "my_package.reneg_plugin:register"
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ReNegError

#: The entry-point group of plugins (each entry: a function that registers what its package brings).
GROUP = "reneg.plugins"
logger = logging.getLogger(__name__)
_state = {"loaded": False}

T = TypeVar("T")


def load_plugins() -> None:
    """Call every registered plugin's ``register`` once (a plugin that fails to load is skipped with a warning)."""
    if _state["loaded"]:
        return
    _state["loaded"] = True
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            entry.load()()
        except Exception as error:  # noqa: BLE001 - one broken plugin must not break reneg
            logger.warning("reneg plugin '%s' failed to load (%s: %s); continuing without it",
                           entry.name, type(error).__name__, error)


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names it in messages: "unknown reward 'x': choose one of ...").

    Args:
        kind: what an entry is, for messages.
        hint: what to say after the choices of an unknown name (e.g. "or pass a prompts file").
        load: a function that registers the built-in entries, called once before the first read (lazily).
    """

    def __init__(self, kind: str, *, hint: str = "", load: Callable[[], None] | None = None):
        self.kind, self.hint = kind, hint
        #: name -> entry as registered, plugins not loaded (tests may patch it; readers use the methods below)
        self.entries: dict[str, T] = {}
        #: what fills the built-in entries, run once before the first read (the families: importing every
        #: pipeline module costs seconds that ``reneg CMD --help`` need not pay)
        self._load = load

    # -- writing
    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a name registered twice is refused in one line."""
        if name in self.entries:
            raise ReNegError(f"{self.kind} '{name}' is already registered: choose another name")
        self.entries[name] = entry
        return entry

    def register(self, name: str, make: Callable[[Callable], T] | None = None) -> Callable:
        """Decorator registering ``make(function)`` (or the function itself) as ``name``; returns the function."""

        def decorator(function):
            self.add(name, make(function) if make else function)
            return function

        return decorator

    def remove(self, name: str) -> T | None:
        """Unregister ``name`` (tests; a plugin that replaces a built-in); returns the entry, if there was one."""
        return self.entries.pop(name, None)

    # -- reading (plugins load first)
    def _read(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        load_plugins()
        return self.entries

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __getitem__(self, name: str) -> T:
        entries = self._read()
        if name not in entries:
            raise self.unknown(name)
        return entries[name]

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._read().get(name, default)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._read())

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, sorted by name."""
        entries = self._read()
        return [(name, entries[name]) for name in sorted(entries)]

    def values(self) -> list[T]:
        return [entry for _, entry in self.items()]

    def descriptions(self) -> dict[str, str]:
        """Name -> the entry's one-line ``description``, sorted by name (what listings print)."""
        return {name: getattr(entry, "description", "") for name, entry in self.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._read())

    def unknown(self, name: str, choices: list[str] | None = None) -> ReNegError:
        """The one-line error of an unknown name: the sorted choices (``choices``: how to show them)."""
        shown = ", ".join(choices if choices is not None else self.names())
        hint = f" {self.hint}" if self.hint else ""
        return ReNegError(f"unknown {self.kind} '{name}': choose one of {shown}{hint}")
