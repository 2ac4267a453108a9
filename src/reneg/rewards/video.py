"""Videos (B, F, 3, H, W) where images (B, 3, H, W) are expected: per-frame rewards and VBench's video scores.

A reward scores each frame with its video's prompt and the video gets the mean
over its frames (per-frame rewards averaged, as ReNeg scores ZeroScope and
VideoCrafter2 in Table 4); images pass through unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from ..errors import ReNegError
from ..io import to_pil


def frame_rewards(reward, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """``reward(images, prompts)``; for videos the mean over frames of each frame's reward, one score per video."""
    if images.dim() == 4:
        return reward(images, prompts)
    batch, frames = images.shape[:2]
    scores = reward(images.flatten(0, 1), [prompt for prompt in prompts for _ in range(frames)])
    return scores.view(batch, frames).float().mean(1)


# -- VBench's temporal dimensions (Huang et al., VBench, CVPR 2024), on frames (B, F, 3, H, W) in [0, 1] ---------


def temporal_flickering(videos: torch.Tensor) -> torch.Tensor:
    """VBench temporal flickering, one score per video: ``(255 - mean_t MAE(I_t, I_{t+1})) / 255``.

    The MAE is over the 8-bit pixels of consecutive frames (frames quantised to uint8 as a saved video is);
    1 means no change at all between frames.
    """
    frames = (videos.detach().float().clamp(0, 1) * 255).round()
    mae = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))  # (B, F - 1)
    return (255.0 - mae.mean(1)) / 255.0


@torch.no_grad()
def background_consistency(videos: torch.Tensor, clip_model, processor) -> torch.Tensor:
    """VBench background consistency, one score per video, with a CLIP image tower (VBench: ViT-B/32).

    For each frame t >= 1: the mean of max(0, cos(f_t, f_{t-1})) and max(0, cos(f_t, f_0)) of the
    L2-normalised image features f, averaged over t (VBench's ``background_consistency``).
    """
    batch, count = videos.shape[:2]
    pixels = processor(images=to_pil(videos.flatten(0, 1)), return_tensors="pt").pixel_values
    features = clip_model.get_image_features(pixel_values=pixels.to(clip_model.device, clip_model.dtype))
    features = getattr(features, "pooler_output", features)  # transformers 5 may return an output object
    features = torch.nn.functional.normalize(features.float(), dim=-1).view(batch, count, -1)
    previous = (features[:, 1:] * features[:, :-1]).sum(-1).clamp(min=0)
    first = (features[:, 1:] * features[:, :1]).sum(-1).clamp(min=0)
    return ((previous + first) / 2).mean(1)


# -- VBench motion smoothness: how well a frame interpolator predicts each odd frame from its neighbours ----------

#: VBench asks the interpolator for the midpoint of two frames: AMT's time embedding ``embt`` = 0.5.
MIDPOINT = 0.5
#: AMT's ``InputPadder`` pads the frames (replicating the border, centred) to multiples of 16 pixels.
INTERPOLATOR_DIVISOR = 16

#: ``interpolator(img0, img1, embt) -> img_t`` or ``{"imgt_pred": img_t}``: frames (1, 3, H, W) in [0, 1],
#: ``embt`` (1, 1, 1, 1) the time between them (AMT's call, less its ``scale_factor`` and ``eval`` keywords).
Interpolator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | dict"]


def load_interpolator(path: str | Path, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A frame interpolator saved as TorchScript (``torch.jit.save``), loaded on ``device`` in eval mode.

    VBench uses AMT-S (Li et al., CVPR 2023; ``amt-s.pth`` with ``AMT-S.yaml``). Its network is not a package
    reneg can import, so export it once where AMT's code is installed, as a module whose
    ``forward(img0, img1, embt)`` returns ``model(img0, img1, embt, scale_factor=1.0, eval=True)["imgt_pred"]``::

        torch.jit.script(Wrapper(amt_s)).save("amt-s.pt")   # or torch.jit.trace on (1, 3, H, W) inputs

    then pass ``vbench-motion-smoothness=amt-s.pt``. TorchScript runs its own code: load files you trust.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ReNegError(f"frame interpolator '{path}' does not exist: export AMT-S to TorchScript (see "
                         "reneg.rewards.video.load_interpolator) and pass its path")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; it is the format AMT exports to
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=torch.device(device))
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReNegError(f"cannot load '{path}' as a TorchScript frame interpolator: {reason}") from None
    return module.eval()


def _centred_padding(height: int, width: int, divisor: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) that bring (height, width) up to multiples of ``divisor``, split as AMT does."""
    pad_height, pad_width = -height % divisor, -width % divisor
    return pad_width // 2, pad_width - pad_width // 2, pad_height // 2, pad_height - pad_height // 2


def interpolate_midpoints(frames: torch.Tensor, interpolator: Interpolator, *,
                          divisor: int = INTERPOLATOR_DIVISOR) -> torch.Tensor:
    """The interpolated midpoint of each consecutive pair of ``frames`` (K, 3, H, W) in [0, 1]: (K - 1, 3, H, W)
    in 8-bit levels, each from the padded pair, unpadded, then ``(x * 255).clip(0, 255)`` truncated to an integer
    as AMT's ``tensor2img`` does (``astype(uint8)``)."""
    height, width = frames.shape[-2:]
    left, right, top, bottom = _centred_padding(height, width, divisor)
    padded = torch.nn.functional.pad(frames, (left, right, top, bottom), mode="replicate")
    embt = torch.full((1, 1, 1, 1), MIDPOINT, device=frames.device, dtype=frames.dtype)
    predicted = []
    for first, second in zip(padded[:-1], padded[1:]):
        output = interpolator(first[None], second[None], embt)
        predicted.append((output["imgt_pred"] if isinstance(output, dict) else output).float())
    midpoints = torch.cat(predicted)[..., top:top + height, left:left + width]
    return (midpoints * 255).clamp(0, 255).trunc()


@torch.no_grad()
def motion_smoothness(videos: torch.Tensor, interpolator: Interpolator, *,
                      divisor: int = INTERPOLATOR_DIVISOR) -> torch.Tensor:
    """VBench motion smoothness, one score per video (B, F, 3, H, W) in [0, 1], F >= 3 (float64).

    The even frames I_0, I_2, ... (8-bit, as saved) go through the interpolator, which predicts each midpoint
    Î_{2k+1} from (I_2k, I_2k+2) (:func:`interpolate_midpoints`); with K even frames there are K - 1 midpoints,
    compared with the odd frames I_1, ..., I_{2K-3}:

        score = (255 - mean_k MAE(I_{2k+1}, Î_{2k+1})) / 255,

    the MAE over the 8-bit RGB values. 1 means every odd frame is exactly its neighbours' interpolation.
    VBench reads the frames back from an mp4 (lossy); here they are the saved lossless frames.
    """
    if videos.dim() != 5 or videos.shape[1] < 3:
        raise ReNegError(f"motion smoothness scores videos of at least 3 frames (it interpolates frame 1 from "
                         f"frames 0 and 2), got shape {tuple(videos.shape)}: pass --num-frames 3 or more")
    levels = (videos.detach().float().clamp(0, 1) * 255).round()  # the 8-bit frames
    scores = []
    for video in levels:
        midpoints = interpolate_midpoints(video[0::2] / 255, interpolator, divisor=divisor)
        odd = video[1::2][:len(midpoints)]
        mae = (odd.double() - midpoints.double()).abs().mean(dim=(1, 2, 3))
        scores.append((255 - mae.mean()) / 255)
    return torch.stack(scores)
