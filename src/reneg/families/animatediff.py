"""AnimateDiff (``AnimateDiffPipeline``): SD1.5's UNet with a motion adapter; the SD negative applies to every frame."""

from __future__ import annotations

from ..core.family import TextConditioning
from .base import register_family
from .video import VideoFamily


@register_family
class AnimateDiffFamily(VideoFamily):
    """SD1.x + motion adapter (``UNetMotionModel``), 5-D latents, DDIM, frames decoded one by one."""

    name = "animatediff"
    pipeline_classes = ("AnimateDiffPipeline",)
    description = "AnimateDiff (SD1.x with a motion adapter), video"

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        """One text row per frame: ``UNetMotionModel`` takes (B * F, L, D), as the pipeline repeats it."""
        return {"encoder_hidden_states": text.embeds.repeat_interleave(self.num_frames, dim=0)}
