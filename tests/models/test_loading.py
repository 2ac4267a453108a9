"""The one place that resolves a model's defaults, and the built-in models' registry."""

from reneg.config import SamplingSettings
from reneg.models.loading import MODELS, builtin_models, default_model, load_model


def test_unset_sampling_settings_fall_back_to_the_models_defaults():
    model = load_model("tiny")
    sampling = model.sampling(SamplingSettings())
    assert (sampling.steps, sampling.guidance_scale, sampling.resolution) == (10, 7.5, 64)
    sampling = model.sampling(SamplingSettings(steps=3, guidance_scale=0.0, resolution=32))
    assert (sampling.steps, sampling.guidance_scale, sampling.resolution) == (3, 0.0, 32)
    assert model.sampling(SamplingSettings(steps=3), steps=None).steps == 10  # an override wins, None included
    assert model.sampling(guidance_scale=2.0).guidance_scale == 2.0


def test_built_in_models_and_the_plugins_default():
    assert {"tiny", "tiny-sdxl", "tiny-sd3"} <= set(builtin_models())
    assert default_model() in MODELS
