"""A method and a reward from a plugin entry point are used like built-ins by `reneg eval` and `reneg generate`."""

import json
from importlib.metadata import EntryPoint

import pytest

from reneg import registry
from reneg.cli import main
from reneg.methods.base import METHODS
from reneg.rewards.base import REWARDS


@pytest.fixture
def plugin(monkeypatch):
    """The entry point of tests/plugin_example.py in the group ``reneg.plugins``, loaded on the next read."""
    registry.load_plugins()  # the installed plugins (the shapes world) stay as they are
    entry = EntryPoint(name="example", value="plugin_example:register", group=registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [entry] if group == registry.GROUP else [])
    monkeypatch.setitem(registry._state, "loaded", False)
    yield
    METHODS.remove("gray")
    REWARDS.remove("brightness")


def test_a_plugin_loads_on_the_first_read_of_any_registry(plugin):
    assert "gray" not in METHODS.entries and "brightness" not in REWARDS.entries
    assert "brightness" in REWARDS  # reading the rewards loads every plugin, so the method is there too
    assert "gray" in METHODS.entries


def test_eval_takes_the_plugins_method_and_reward(plugin, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", "tiny", "--limit", "2", "--steps", "2", "--methods", "null,gray,gray@3",
                 "--metrics", "brightness", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"null", "gray", "gray@3"} and "brightness" in results["metrics"]
    assert results["methods"]["gray"]["mean"]["brightness"] != results["methods"]["null"]["mean"]["brightness"]


def test_generate_takes_the_plugins_method(plugin, tmp_path):
    assert main(["generate", "--model", "tiny", "--method", "gray", "--prompt", "a red circle", "--steps", "2",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "generation.json").read_text())
    assert record["method"] == "gray" and len(record["images"]) == 1


def test_without_the_plugin_its_method_is_unknown(tmp_path, capsys):
    assert main(["generate", "--model", "tiny", "--method", "gray", "--prompt", "a red circle",
                 "--out", str(tmp_path)]) == 2
    assert "unknown method 'gray'" in capsys.readouterr().err
