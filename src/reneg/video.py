"""Videos (B, F, 3, H, W) where images (B, 3, H, W) are expected: per-frame rewards, frames and an animated GIF.

A reward scores each frame with its video's prompt and the video gets the mean
over its frames (per-frame rewards averaged, as ReNeg scores ZeroScope and
VideoCrafter2 in Table 4); images pass through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_path, save_png, to_pil

#: Milliseconds each frame of the animated GIF shows (8 frames per second, AnimateDiff's usual export).
GIF_FRAME_MS = 125


def frame_rewards(reward, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """``reward(images, prompts)``; for videos the mean over frames of each frame's reward, one score per video."""
    if images.dim() == 4:
        return reward(images, prompts)
    batch, frames = images.shape[:2]
    scores = reward(images.flatten(0, 1), [prompt for prompt in prompts for _ in range(frames)])
    return scores.view(batch, frames).float().mean(1)


def save_output(image: torch.Tensor, out: str | Path, index: int) -> dict:
    """Save one output under ``out``: an image as ``NNNNN.png``; a video (F, 3, H, W) as its frames
    ``NNNNN/FFFFF.png`` and the animated ``NNNNN.gif``. Returns its record (``file``, and ``frames``)."""
    out, stem = Path(out), f"{index:05d}"
    if image.dim() == 3:
        save_png(to_pil(image[None])[0], out / f"{stem}.png")
        return {"file": f"{stem}.png"}
    frames = to_pil(image)
    names = [f"{stem}/{number:05d}.png" for number in range(len(frames))]
    for frame, name in zip(frames, names):
        save_png(frame, out / name)
    with atomic_path(out / f"{stem}.gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    return {"file": f"{stem}.gif", "frames": names}


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
    from .io import to_pil

    pixels = processor(images=to_pil(videos.flatten(0, 1)), return_tensors="pt").pixel_values
    features = clip_model.get_image_features(pixel_values=pixels.to(clip_model.device, clip_model.dtype))
    features = getattr(features, "pooler_output", features)  # transformers 5 may return an output object
    features = torch.nn.functional.normalize(features.float(), dim=-1).view(batch, count, -1)
    previous = (features[:, 1:] * features[:, :-1]).sum(-1).clamp(min=0)
    first = (features[:, 1:] * features[:, :1]).sum(-1).clamp(min=0)
    return ((previous + first) / 2).mean(1)
