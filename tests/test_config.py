"""Shared settings: declared once, inherited by every command's config, ranges checked in one place."""

import dataclasses

import pytest

from reneg.cli import command_table
from reneg.config import ModelSettings, SamplingSettings, check_ranges
from reneg.errors import ReNegError

SHARED = ("model", "device", "precision", "steps", "guidance_scale", "resolution", "seed")


MODEL_FREE = ("world-build", "world-pairs", "export")  # build a world or convert a file: no model is sampled
IN_THE_PAGE = ("ui",)  # the UI takes --model and --device; its sampling settings are fields of the page


def _configs():
    return {name: command.config for name, command in command_table().items()
            if command.config is not None and name not in MODEL_FREE + IN_THE_PAGE}


def test_every_command_config_inherits_the_model_and_sampling_settings():
    configs = _configs()
    assert set(configs) == {"train", "adapt", "generate", "dnp", "npo", "eval", "compare", "efficiency"}
    for name, config in configs.items():
        assert issubclass(config, SamplingSettings), name
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert set(SHARED) <= set(fields), name


def test_a_shared_range_is_declared_once():
    """Every config's ``steps``, ``guidance_scale``, ``resolution`` and ``precision`` carry the same range."""
    metadata = {}
    for config in _configs().values():
        for f in dataclasses.fields(config):
            if f.name in ("steps", "guidance_scale", "resolution", "precision", "device", "model"):
                ranges = {k: v for k, v in f.metadata.items() if k != "help"}
                metadata.setdefault(f.name, set()).add(repr(sorted(ranges.items())))
    assert all(len(ranges) == 1 for ranges in metadata.values()), metadata


@pytest.mark.parametrize("name, values, needle", [
    ("generate", {"steps": 0}, "--steps must be >= 1, got 0"),
    ("train", {"batch_size": 0}, "--batch-size must be >= 1, got 0"),
    ("eval", {"resolution": 60}, "--resolution must be a multiple of 8, got 60"),
    ("dnp", {"precision": "fp8"}, "--precision must be one of fp32, fp16, bf16, got 'fp8'"),
    ("efficiency", {"probes": 1}, "--probes must be >= 2, got 1"),
    ("npo", {"route": "nonsense"}, "--route must be one of"),
])
def test_ranges_are_checked_when_a_config_is_built_in_python(name, values, needle):
    with pytest.raises(ReNegError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _configs()[name](**values)


def test_check_ranges_checks_list_items():
    @dataclasses.dataclass
    class Ranks(ModelSettings):
        ranks: list = dataclasses.field(default_factory=lambda: [8], metadata={"min": 1})

    check_ranges(Ranks(ranks=[8, 16]))
    with pytest.raises(ReNegError, match="--ranks must be >= 1, got 0"):
        Ranks(ranks=[8, 0])


def test_one_name_per_concept_with_the_older_names_as_aliases():
    """generate and eval both take --num-images and --images-per-prompt; compare's --limit (spread over the
    benchmark, not eval's first N) is --prompt-count, and its --metric also answers to eval's --metrics."""
    from reneg.cli import build_parser

    def parsed(argv):
        return vars(build_parser(argv).parse_args(argv))

    assert parsed(["generate", "--images-per-prompt", "3"])["num_images"] == 3
    assert parsed(["eval", "--num-images", "2"])["images_per_prompt"] == 2
    assert parsed(["compare", "--limit", "5"])["limit"] == parsed(["compare", "--prompt-count", "5"])["limit"] == 5
    assert parsed(["compare", "--metrics", "contrast"])["metric"] == "contrast"
