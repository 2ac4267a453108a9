"""Every module of the package imports with the declared dependencies alone (CI runs this in a fresh virtual
environment, so an undeclared import fails here, not on a user's machine)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import reneg

#: Files written for other programs (a host's node pack, an extension): they import the host's modules, and
#: reneg itself never imports them.
FOR_HOSTS = "reneg.export.payload"

MODULES = sorted(m.name for m in pkgutil.walk_packages(reneg.__path__, prefix="reneg.")
                 if not m.name.startswith(FOR_HOSTS) and m.name != "reneg.__main__")  # __main__ runs the CLI


def test_the_package_has_its_modules():
    assert len(MODULES) > 100 and "reneg.cli" in MODULES and "reneg.methods.reneg.train" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)
