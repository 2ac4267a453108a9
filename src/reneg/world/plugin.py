"""The shapes world as a reneg plugin: its model (the default), rewards, prompt set, captioner and commands,
registered like any package's.

Loaded through the ``reneg.plugins`` and ``reneg.commands`` entry points (see :mod:`reneg.registry`);
nothing outside ``reneg/world/`` imports this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import arg

#: What `reneg eval` reports on the shapes world: both preference models and the ground truth.
WORLD_METRICS = ("shapes-hps", "shapes-pick", "truth-adherence", "truth-shape", "truth-colour", "truth-background",
                 "truth-cleanliness")


def _defaults():
    from ..models.loading import ModelDefaults
    from . import path, world_config

    config = world_config()
    prompts = (path("prompts") / "train.txt").read_text().splitlines()
    return ModelDefaults(guidance_scale=config["guidance_scale"], num_inference_steps=config["num_inference_steps"],
                         handcrafted_negative=config["handcrafted_negative"], reward=config["reward"],
                         train_prompts=tuple(prompts), benchmark="shapes", metrics=WORLD_METRICS,
                         captioner="shapes-truth", adapt_reward=config["reward"])


def _benchmark(paths):
    from ..prompts import load_prompts
    from . import path

    return load_prompts(path("prompts") / "benchmark.json")


def register() -> None:
    """Register the world's rewards and, when its weights ship, its model (as the default) and benchmark."""
    from ..models.loading import BuiltinModel, register_model
    from ..prompts import register_benchmark
    from . import (
        captioner,  # noqa: F401  - registers the shapes-truth captioner (auto-DNP)
        is_built,
        path,
        rewards,  # noqa: F401  - registers shapes-hps, shapes-pick, truth-*
    )

    if not is_built():
        return
    register_model("shapes", BuiltinModel(
        directory=lambda: str(path("sd")), defaults=_defaults,
        description="the shapes world: a trained 64x64 Stable Diffusion of coloured shapes (the embedded default)",
    ), default=True)
    register_benchmark("shapes", files=[], description="the shapes world's held-out benchmark: 400 prompts in 4 "
                       "styles", source="`reneg world-build`")(_benchmark)


def build_command():
    """The ``reneg world-build`` command: (help, config class, run(config))."""
    from .build import BuildConfig, build

    return "rebuild every model of the embedded shapes world from scratch", BuildConfig, lambda c: print(build(c))


@dataclass
class PairsConfig:
    """Settings of ``reneg world-pairs``."""

    out: str = arg(None, "output directory: images/NNNNN_preferred.png, images/NNNNN_rejected.png and pairs.jsonl "
                         "(one {\"prompt\", \"preferred\", \"rejected\", \"kind\"} object a line, paths relative "
                         "to it)", metavar="DIR", output="dir")
    count: int = arg(256, "pairs to render", metavar="N", min=1)
    seed: int = arg(0, "seed of the scenes and the degradations", min=0, max=2**63 - 1)

    def __post_init__(self):
        from ..config import check_ranges, require

        require(self.out is not None, "--out DIR is required: where the pairs and pairs.jsonl go")
        check_ranges(self)


def pairs_command():
    """The ``reneg world-pairs`` command: preference pairs of the world for ``reneg npo --route dpo --pairs``."""
    return ("write preference pairs of the shapes world (clean and correct vs degraded or wrong) for "
            "`reneg npo --route dpo`", PairsConfig, _write_pairs)


def _write_pairs(config: PairsConfig):
    from .pairs import write_world_pairs  # (torch: only when the command runs)

    return write_world_pairs(config.out, count=config.count, seed=config.seed)
