"""A plugin as a third-party package would write it: one method and one reward, registered by ``register()``.

Its entry point (``reneg.plugins``: ``example = "plugin_example:register"``) is installed by tests/test_plugins.py.
"""

import torch

from reneg.methods.base import FixedNegative, register_method
from reneg.rewards.base import as_scores, check_inputs, register_reward


def register() -> None:
    @register_method("gray", baseline=True, description="the negative prompt 'gray' (a plugin's method)")
    def gray(argument, model):
        return FixedNegative(model.family.encode(["gray"]).to("cpu", torch.float32), "plugin:gray")

    @register_reward("brightness", description="mean pixel value (a plugin's reward)")
    def brightness(model, *, device, dtype):
        def reward(images, prompts):
            check_inputs(images, prompts)
            return as_scores(images.float().mean(dim=(1, 2, 3)), images)

        return reward
