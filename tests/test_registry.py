"""One Registry type for rewards, captioners, methods, prompt sets, models and families."""

import pytest

from reneg import registry
from reneg.errors import ReNegError
from reneg.families.base import FAMILIES
from reneg.methods.base import METHODS
from reneg.methods.dnp.captioners import CAPTIONERS
from reneg.models.loading import MODELS
from reneg.prompts import PROMPT_SETS
from reneg.registry import Registry
from reneg.rewards.base import REWARDS


def test_every_registry_is_one_type():
    registries = [REWARDS, CAPTIONERS, METHODS, PROMPT_SETS, MODELS, FAMILIES]
    assert all(isinstance(r, Registry) for r in registries)
    assert {r.kind for r in registries} == {"reward", "captioner", "method", "benchmark", "model", "pipeline class"}


def test_a_name_registered_twice_is_refused_in_one_line():
    things = Registry("thing")
    things.add("a", 1)
    with pytest.raises(ReNegError, match=r"^thing 'a' is already registered: choose another name$"):
        things.add("a", 2)
    assert things["a"] == 1


def test_an_unknown_name_is_answered_with_the_sorted_choices():
    things = Registry("thing", hint="(or pass a file)")
    for name in ("b", "c", "a"):
        things.add(name, name.upper())
    with pytest.raises(ReNegError, match=r"^unknown thing 'z': choose one of a, b, c \(or pass a file\)$"):
        things["z"]
    assert things.names() == ["a", "b", "c"] and things.items()[0] == ("a", "A") and things.get("z") is None


def test_the_decorator_registers_what_it_makes_and_lists_descriptions():
    things = Registry("thing")

    @things.register("double", lambda function: (function, "twice"))
    def double(x):
        return 2 * x

    @things.register("plain")
    def plain(x):
        return x

    assert things["double"] == (double, "twice") and things["plain"] is plain and double(3) == 6
    assert Registry("reward").descriptions() == {}


def test_reading_any_registry_loads_the_plugins_once(monkeypatch):
    calls = []

    class Entry:
        name = "counting"

        def load(self):
            return lambda: calls.append("registered")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Entry()])
    monkeypatch.setitem(registry._state, "loaded", False)
    things = Registry("thing")
    assert "x" not in things and things.names() == [] and len(things) == 0
    assert calls == ["registered"]


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch, caplog):
    class Broken:
        name = "broken"

        def load(self):
            raise ImportError("no such module")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Broken()])
    monkeypatch.setitem(registry._state, "loaded", False)
    assert Registry("thing").names() == []
    assert "reneg plugin 'broken' failed to load" in caplog.text


def test_duplicate_prompt_sets_are_refused_not_overwritten():
    with pytest.raises(ReNegError, match="benchmark 'tiny' is already registered"):
        PROMPT_SETS.add("tiny", PROMPT_SETS["tiny"])


def test_a_registry_fills_its_built_in_entries_once_on_the_first_read():
    calls = []
    things = Registry("thing", load=lambda: calls.append(things.add("built-in", 1)))
    things.add("early", 0)  # writing does not load
    assert calls == []
    assert things.names() == ["built-in", "early"] and things["built-in"] == 1 and len(things) == 2
    assert len(calls) == 1


def test_the_families_import_their_pipelines_only_when_looked_up():
    """`reneg CMD --help` imports the methods, which import reneg.families: the pipelines' modules (FLUX's alone
    took seconds) load on the first family lookup instead."""
    import subprocess
    import sys

    code = ("import sys, reneg.families as f; from reneg.methods import baselines; "
            "assert 'diffusers.pipelines.flux.pipeline_flux' not in sys.modules and 'reneg.families.flux' not in "
            "sys.modules; assert 'FluxPipeline' in f.supported_pipelines() and 'reneg.families.flux' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
