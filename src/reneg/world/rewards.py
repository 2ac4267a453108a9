"""The world's rewards and evaluators, registered in the reward registry.

- ``shapes-hps``: the role of HPSv2.1, an open_clip CLIP loaded by open_clip's own
  ``local-dir:`` loader and scored by the same :class:`~reneg.rewards.hps.HpsReward` as HPS.
- ``shapes-pick``: the role of PickScore, a transformers CLIPModel loaded by the ``pickscore`` reward.
- ``truth-*``: the ground-truth scorer (never trained against): per-attribute adherence
  (shape, colour, background; 1 right, 0 wrong), their mean, and cleanliness (1 - max degradation
  probability). These are evaluation metrics, not differentiable.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..rewards.base import as_scores, check_inputs, register_reward, reward_spec
from . import path


@register_reward("shapes-hps", default_model=str(path("shapes-hps")),
                 description="shapes world: preference model of HPS's family (open_clip), the role of HPSv2.1")
def shapes_hps(model: str | None, *, device: torch.device, dtype: torch.dtype):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    from ..models.hub import resolve
    from ..rewards.hps import HpsReward

    directory = resolve(model or str(path("shapes-hps")), what="shapes-hps model")
    clip = open_clip.create_model(f"local-dir:{directory}", precision="fp32")
    reward = HpsReward(clip.to(device=device, dtype=dtype), SimpleTokenizer(), version="shapes")
    reward.name = "shapes-hps"
    return reward


@register_reward("shapes-pick", default_model=str(path("shapes-pick")),
                 description="shapes world: independent preference model (transformers CLIP), the role of PickScore")
def shapes_pick(model: str | None, *, device: torch.device, dtype: torch.dtype):
    return reward_spec("pickscore").factory(model or str(path("shapes-pick")), device=device, dtype=dtype)


@lru_cache(maxsize=4)
def _truth_model(directory: str, device: str):
    """One ground-truth model per (directory, device), shared by the five truth metrics."""
    from .truth import load_truth

    return load_truth(directory).to(device)


class _SharedJudgement:
    """The last judgement of one truth model: the five metrics of one batch cost one forward pass."""

    def __init__(self):
        self.images, self.key, self.value = None, None, None

    def __call__(self, model, images: torch.Tensor, prompts: list[str]) -> dict:
        """Judge ``images`` unless this very tensor (same object, unmodified) was just judged with these prompts.

        The tensor itself is held, so its memory cannot be reused by another batch while it is the key.
        """
        from .truth import judge

        if images.is_inference():  # no version counter: judged each time
            return judge(model, images, prompts)
        key = (images._version, tuple(prompts))
        if images is not self.images or key != self.key:
            self.images, self.key, self.value = None, None, judge(model, images, prompts)
            self.images, self.key = images, key
        return self.value


_JUDGEMENTS: dict[int, _SharedJudgement] = {}


class TruthMetric:
    """One output of the ground-truth scorer as a metric ``(images, prompts) -> (B,)``."""

    def __init__(self, key: str, directory: str, device: torch.device):
        self.key, self.device = key, device
        self.model = _truth_model(str(directory), str(device))

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        check_inputs(images, prompts)
        images = images.to(self.device)
        judgement = _JUDGEMENTS.setdefault(id(self.model), _SharedJudgement())
        return as_scores(judgement(self.model, images, list(prompts))[self.key], images)


def _register_truth(key: str, description: str) -> None:
    def factory(model: str | None, *, device: torch.device, dtype: torch.dtype):
        return TruthMetric(key, model or str(path("truth")), torch.device(device))

    register_reward(f"truth-{key}", default_model=str(path("truth")), description=description)(factory)


for _key, _text in {
    "adherence": "shapes world ground truth: mean of shape, colour and background right (not differentiable)",
    "shape": "shapes world ground truth: the shapes are the prompt's (1/0)",
    "colour": "shapes world ground truth: the object colours are the prompt's (1/0)",
    "background": "shapes world ground truth: the background colour is the prompt's (1/0)",
    "cleanliness": "shapes world ground truth: 1 - the highest degradation probability",
}.items():
    _register_truth(_key, _text)
