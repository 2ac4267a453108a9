"""Text-to-video (``TextToVideoSDPipeline``: ModelScope, ZeroScope): a 3-D UNet conditioned by CLIP as SD is.

The pipeline steps its scheduler on the frames flattened into the batch; DDIM is
elementwise, so stepping the 5-D latents as they are gives the same x_{t-1}.
"""

from __future__ import annotations

from .base import register_family
from .video import VideoFamily


@register_family
class TextToVideoFamily(VideoFamily):
    """ModelScope / ZeroScope (``UNet3DConditionModel``), 5-D latents, DDIM, frames decoded one by one."""

    name = "text-to-video"
    pipeline_classes = ("TextToVideoSDPipeline",)
    description = "text-to-video SD (ModelScope, ZeroScope), video"
