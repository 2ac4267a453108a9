"""The shapes world as a reneg plugin: its model (the default), rewards and benchmark, registered like any package's.

Loaded through the ``reneg.plugins`` entry point (see :mod:`reneg.plugins`);
nothing outside ``reneg/world/`` imports this package.
"""

from __future__ import annotations

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
                         captioner="shapes-truth")


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
