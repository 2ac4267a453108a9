"""The LAION aesthetic predictor (improved-aesthetic-predictor): an MLP on normalised CLIP ViT-L/14 image features.

Reference: ``christophschuhmann/improved-aesthetic-predictor``
``simple_inference.py``: ``clip.load("ViT-L/14")`` and its transform (see
:mod:`.transforms`), ``encode_image``, L2 normalisation, then ``MLP(768)``
loaded from ``sac+logos+ava1-l14-linearMSE.pth`` (a plain state dict with keys
``layers.{0,2,4,6,7}.{weight,bias}``). The CLIP here is transformers'
``CLIPModel`` of ``openai/clip-vit-large-patch14`` (the same OpenAI weights;
``get_image_features`` is ``encode_image``), loaded as for ``clip-score``.

Head file: ``--reward-model`` takes the ``.pth`` itself, a directory holding
it, or a cached hub repo. The default is trl's copy,
``trl-lib/ddpo-aesthetic-predictor`` / ``aesthetic-model.pth``; the original is
``sac+logos+ava1-l14-linearMSE.pth`` in the GitHub repo above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ReNegError
from .base import as_scores, check_inputs, freeze, register_reward
from .clip import ClipReward, load_clip
from .files import CheckpointSource, load_module_weights, load_weights, resolve_checkpoint
from .transforms import ClipLoadPreprocess

AESTHETIC_HEAD = CheckpointSource(
    "aesthetic predictor head", "trl-lib/ddpo-aesthetic-predictor",
    ("aesthetic-model.pth", "sac+logos+ava1-l14-linearMSE.pth"),
)
AESTHETIC_CLIP = "openai/clip-vit-large-patch14"
#: Widths of the head's hidden linear layers and the dropouts after the first three (reference ``MLP``).
HEAD_WIDTHS = (1024, 128, 64, 16)
HEAD_DROPOUTS = (0.2, 0.2, 0.1)


class LinearHead(nn.Module):
    """The aesthetic predictor's MLP, also ImageReward's: ``in -> 1024 -> 128 -> 64 -> 16 -> 1``.

    Linear layers only: the reference's ReLUs are commented out, so the head
    is an affine map (dropouts act in training only). ``layers`` indices
    0, 2, 4, 6, 7 are the linear layers, as in the checkpoints.
    """

    def __init__(self, input_size: int):
        super().__init__()
        widths = (input_size, *HEAD_WIDTHS)
        modules: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
            modules.append(nn.Linear(width_in, width_out))
            if index < len(HEAD_DROPOUTS):
                modules.append(nn.Dropout(HEAD_DROPOUTS[index]))
        modules.append(nn.Linear(widths[-1], 1))
        self.layers = nn.Sequential(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def load_head(path, *, what: str) -> LinearHead:
    """A frozen fp32 :class:`LinearHead` from a ``layers.*`` state dict; its input width comes from ``layers.0``."""
    weights = load_weights(path, what=what)
    first = weights.get("layers.0.weight")
    if first is None or first.ndim != 2:
        raise ReNegError(f"{what} '{path}' has no 'layers.0.weight' matrix: is it the LAION aesthetic MLP?")
    head = LinearHead(first.shape[1])
    load_module_weights(head, weights, what=f"{what} '{path}'")
    return freeze(head)


class AestheticReward(ClipReward):
    """``MLP(normalize(E_img(x)))``: the LAION aesthetic score (about 1-10) of each image; prompts are ignored."""

    def __init__(self, model, processor, head: LinearHead, *, quantize: bool = True):
        super().__init__(model, processor, quantize=quantize)
        self.preprocess = ClipLoadPreprocess(model.config.vision_config.image_size, quantize=quantize)
        self.head = freeze(head)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        features = self.image_embeds(images)
        return as_scores(self.head(features.to(self.head.layers[0].weight.device)), images)


def load_aesthetic(
    head: str | None, *, clip: str = AESTHETIC_CLIP, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AestheticReward:
    """Load the aesthetic reward.

    Args:
        head: the head ``.pth``, a directory holding it, or a cached hub repo (default trl's copy).
        clip: the CLIP ViT-L/14 (transformers format): a local directory or a cached hub id.
        device, dtype: where the frozen CLIP lives; the head stays fp32 (as the reference).
    """
    path = resolve_checkpoint(head, AESTHETIC_HEAD)
    mlp = load_head(path, what=AESTHETIC_HEAD.what)
    model, processor = load_clip(clip, device=torch.device(device), dtype=dtype)
    if model.config.projection_dim != mlp.layers[0].in_features:
        raise ReNegError(f"aesthetic head '{path}' takes {mlp.layers[0].in_features}-d features but CLIP '{clip}' "
                         f"gives {model.config.projection_dim}-d: use {AESTHETIC_CLIP}")
    return AestheticReward(model, processor, mlp.to(device))


@register_reward("aesthetic", default_model=AESTHETIC_HEAD.repo,
                 description="LAION aesthetic predictor: linear MLP on normalised CLIP ViT-L/14 image features")
def aesthetic(model: str | None, *, device: torch.device, dtype: torch.dtype,
              clip: str = AESTHETIC_CLIP) -> AestheticReward:
    """The aesthetic reward; ``model`` is the head file (see the module docstring)."""
    return load_aesthetic(model, clip=clip, device=device, dtype=dtype)
