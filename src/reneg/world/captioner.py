"""The shapes world's captioner (``shapes-truth``): the ground-truth scorer names objects, background and flaws.

auto-DNP's captioner in the world (the role BLIP-2 plays for real checkpoints, DNP Sec. 3.5).
"""

from __future__ import annotations

import torch

from ..methods.dnp.captioners import register_captioner
from . import path


class TruthCaptioner:
    """Images (B, 3, H, W) in [0, 1] -> world captions, e.g. "a red circle on a blue background, blurry"."""

    def __init__(self, directory: str, device: torch.device):
        from .truth import load_truth

        self.device = device
        self.model = load_truth(directory).to(device)

    def __call__(self, images: torch.Tensor) -> list[str]:
        from .truth import caption

        return caption(self.model, images.detach().float().to(self.device))


@register_captioner("shapes-truth", default_model=str(path("truth")),
                    description="shapes world: its ground-truth scorer describes the image in world words")
def shapes_truth(model_path: str | None, *, device: torch.device, dtype: torch.dtype):
    from ..models.hub import resolve

    return TruthCaptioner(resolve(model_path or str(path("truth")), what="shapes-truth model"), device)
