"""Plugins: packages that register models, rewards and benchmarks through reneg's registries.

A plugin is an entry point in the group ``reneg.plugins`` naming a function
that takes no argument and registers what it brings (``register_model``,
``register_reward``, ``register_benchmark``, ``register_method``). The shapes
world is such a plugin (``reneg.world.plugin:register``); a third-party package
adds its own the same way, in its ``pyproject.toml``::

    [project.entry-points."reneg.plugins"]
    mine = "my_package.reneg_plugin:register"

Plugins load once, lazily, the first time a registry is read.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

GROUP = "reneg.plugins"
logger = logging.getLogger(__name__)
_state = {"loaded": False}


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
