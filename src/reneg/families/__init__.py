"""Model families: how a pipeline turns prompts into branch conditioning, draws latents and decodes.

A family wraps one loaded diffusers pipeline. Everything the rollout needs
from a model goes through it, so that a new kind of pipeline (SDXL's pooled
embedding and time ids, ControlNet residuals, video's 5-D latents, a
flow-matching scheduler) adds one family here and no edits elsewhere.
Pipelines without a family are refused with one line naming the supported ones.
"""

from ..core.family import Family, TextConditioning
from .base import family_for, register_family, supported_pipelines

# The built-in families (sd, sdxl, sd3, flux, controlnet, animatediff, text_to_video, pixart: base.BUILTIN) are
# imported, and so registered, on the first lookup (family_for, supported_pipelines), not here.

__all__ = ["Family", "TextConditioning", "family_for", "register_family", "supported_pipelines"]
