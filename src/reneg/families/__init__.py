"""Model families: how a pipeline turns prompts into branch conditioning, draws latents and decodes.

A family wraps one loaded diffusers pipeline. Everything the rollout needs
from a model goes through it, so that a new kind of pipeline (SDXL's pooled
embedding and time ids, ControlNet residuals, video's 5-D latents, a
flow-matching scheduler) adds one family here and no edits elsewhere.
Pipelines without a family are refused with one line naming the supported ones.
"""

from ..core.family import Family, TextConditioning
from .base import family_for, register_family, supported_pipelines
from . import sd  # noqa: F401  - registers StableDiffusionPipeline
from . import sdxl  # noqa: F401  - registers StableDiffusionXLPipeline
from . import sd3  # noqa: F401  - registers StableDiffusion3Pipeline
from . import flux  # noqa: F401  - registers FluxPipeline
from . import controlnet  # noqa: F401  - registers StableDiffusionControlNetPipeline
from . import animatediff  # noqa: F401  - registers AnimateDiffPipeline
from . import text_to_video  # noqa: F401  - registers TextToVideoSDPipeline
from . import pixart  # noqa: F401  - registers PixArtAlphaPipeline

__all__ = ["Family", "TextConditioning", "family_for", "register_family", "supported_pipelines"]
