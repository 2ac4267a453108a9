"""SD1.x/2.x with a ControlNet (``StableDiffusionControlNetPipeline``): the negative transfers as is (ReNeg Table 5).

The ControlNet is a second module called before the UNet at every step; the
family's model is :class:`ControlledUNet`, which calls both as diffusers does
(``guess_mode=False``): the ControlNet sees each branch's own text conditioning
(the negative's on the negative branch) and the control image, and its residuals
go to the UNet of the same branch. The control image is one for every image
(``--control-image FILE``), resized as the pipeline's ``prepare_image`` does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.family import TextConditioning, WrappedDenoiser
from ..errors import ReNegError
from ..io import open_rgb
from .base import register_family
from .sd import StableDiffusionFamily


class ControlledUNet(WrappedDenoiser):
    """ControlNet then UNet with its residuals: the denoiser's model signature, ``(x, t, **conditioning)``."""

    def __init__(self, unet, controlnet):
        super().__init__()
        self.unet, self.controlnet = unet, controlnet

    @property
    def network(self) -> torch.nn.Module:
        return self.unet

    def forward(self, sample, timestep, *, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                return_dict=False):
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=controlnet_cond, conditioning_scale=conditioning_scale,
                                    guess_mode=False, return_dict=False)
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid,
                         return_dict=return_dict)


def read_control_image(path: str | Path):
    """The control image at ``path`` as an RGB PIL image; a missing or unreadable file is a one-line error."""
    return open_rgb(path, what="control image", advice="pass an image file (.png, .jpg)")


@register_family
class ControlNetFamily(StableDiffusionFamily):
    """SD1.x/2.x + one ControlNet: the text conditioning of SD, the control image on every branch."""

    name = "sd-controlnet"
    attention_guidance = None  # NAG not yet: the ControlNet's own cross-attention would need the negative too
    pipeline_classes = ("StableDiffusionControlNetPipeline",)
    description = "SD1.x/2.x with a ControlNet (--control-image FILE)"

    def __init__(self, pipe):
        super().__init__(pipe)
        if not hasattr(pipe.controlnet, "controlnet_cond_embedding"):
            raise ReNegError(f"{type(pipe.controlnet).__name__} (several ControlNets) is not supported yet: "
                             "save the pipeline with one ControlNet")
        self._model = ControlledUNet(pipe.unet, pipe.controlnet)
        self.control_image = None
        self._prepared: dict[int, torch.Tensor] = {}

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def condition_on(self, *, control_image=None, num_frames=None) -> None:
        """Condition every image on ``control_image`` (a path or a PIL image); None keeps the one set before."""
        super().condition_on(num_frames=num_frames)
        if control_image is None:
            if self.control_image is None:
                raise ReNegError("this ControlNet pipeline needs a control image: pass --control-image FILE")
            return
        self.control_image = read_control_image(control_image) if isinstance(control_image, (str, Path)) \
            else control_image
        self._prepared.clear()

    def control(self, resolution: int) -> torch.Tensor:
        """The control image (1, 3, H, W) in [0, 1] at ``resolution``, as ``prepare_image`` makes it."""
        if self.control_image is None:
            raise ReNegError("this ControlNet pipeline needs a control image: pass --control-image FILE")
        if resolution not in self._prepared:
            image = self.pipe.control_image_processor.preprocess(self.control_image, height=resolution,
                                                                 width=resolution).to(dtype=torch.float32)
            self._prepared[resolution] = image[:1].to(self.device)
        return self._prepared[resolution]

    def conditioning(self, text: TextConditioning, *, resolution: int) -> dict:
        image = self.control(resolution)
        return {"encoder_hidden_states": text.embeds,
                "controlnet_cond": image.expand(len(text), *image.shape[1:])}
