"""``reneg eval`` on video pipelines (AnimateDiff, text-to-video SD): each item is a video.

A video item is stored beside the image layout of :mod:`.store`, under the same run folders and item names:

    OUT/images/<run-slug>/<item>/00000.png ...  its frames, each written atomically
    OUT/images/<run-slug>/<item>.gif            its animated GIF, written last: a video whose GIF exists is whole
                                                (a rerun skips it), and the gallery shows it

The number of frames (``--num-frames``, the pipeline's 16 by default) is one of the run's settings, so a
resume with another count is refused. Reward metrics score a video by the mean of its frames' rewards
(ReNeg Table 4's per-frame averages); VBench's metrics (Huang et al., CVPR 2024) score the video itself and
are refused on image pipelines:

    vbench-temporal-flickering                 no model; added on videos as a diagnostic
    vbench-background-consistency[=CLIP]       a transformers CLIP (VBench: ViT-B/32), path or cached hub id
    vbench-motion-smoothness=INTERPOLATOR.pt   a frame interpolator saved as TorchScript (VBench: AMT-S)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from PIL import Image

from ..errors import ReNegError
from ..io import frame_names, save_video, to_pil
from ..models.loading import LoadedModel
from ..rewards import Reward
from ..rewards.clip import load_clip
from ..rewards.video import (
    background_consistency,
    frame_rewards,
    load_interpolator,
    motion_smoothness,
    temporal_flickering,
)
from .metrics import METRIC_KINDS, MetricSpec
from .store import IMAGES_DIR, ImageStore, read_rgb

if TYPE_CHECKING:
    from .plan import Plan

#: VBench scores background consistency with OpenAI's CLIP ViT-B/32; these are its weights in transformers' layout.
BACKGROUND_CLIP = "openai/clip-vit-base-patch32"
FLICKERING = "vbench-temporal-flickering"

#: ``metric(videos (B, F, 3, H, W) in [0, 1], prompts) -> scores (B,)``
VideoScorer = Callable[[torch.Tensor, list[str]], torch.Tensor]


def is_video(model: LoadedModel) -> bool:
    return getattr(model.family, "is_video", False)


# ---------------------------------------------------------------- the store


class VideoStore(ImageStore):
    """Videos of each run: frames ``<item>/FFFFF.png`` and ``<item>.gif`` under ``OUT/images/<slug>/``."""

    def __init__(self, out: str | Path, *, num_frames: int):
        super().__init__(out)
        self.num_frames = num_frames

    def path(self, slug: str, item: str) -> Path:
        """The GIF, written after every frame: it marks the video finished."""
        return self.directory(slug) / f"{item}.gif"

    def relative_path(self, slug: str, item: str) -> str:
        return f"{IMAGES_DIR}/{slug}/{item}.gif"

    def outputs(self, videos: torch.Tensor) -> list[list[Image.Image]]:
        """A generated batch (B, F, 3, H, W) as each video's frames."""
        return [to_pil(video) for video in videos]

    def save(self, slug: str, item: str, frames: list[Image.Image], text: dict[str, str] | None = None) -> None:
        save_video(frames, self.directory(slug), item)  # (frames carry no text chunks: ``text`` is for images)

    def load(self, slug: str, items: list[str]) -> torch.Tensor:
        """Saved videos as floats in [0, 1], (B, F, 3, H, W), read from their frames."""
        directory = self.directory(slug)
        return torch.stack([read_rgb([directory / name for name in frame_names(item, self.num_frames)])
                            for item in items])


def item_store(out: str | Path, model: LoadedModel) -> ImageStore:
    """Where ``reneg eval`` keeps the model's outputs: images, or videos of the family's number of frames."""
    return VideoStore(out, num_frames=model.family.num_frames) if is_video(model) else ImageStore(out)


def video_settings(model: LoadedModel) -> dict:
    """What a video run adds to the settings that decide its outputs: the number of frames."""
    return {"num_frames": model.family.num_frames} if is_video(model) else {}


def items_per_score_batch(plan: Plan) -> int:
    """``--score-batch-size`` counts images: a scoring batch of videos holds that many frames (at least a video)."""
    frames = plan.settings.get("num_frames")
    size = plan.config.score_batch_size
    return max(1, size // frames) if frames else size


# ---------------------------------------------------------------- VBench's metrics


def _flickering(model: str | None, *, device: torch.device, dtype: torch.dtype) -> VideoScorer:
    if model is not None:
        raise ReNegError(f"{FLICKERING} takes no model: drop '={model}'")
    return lambda videos, prompts: temporal_flickering(videos)


def _background(model: str | None, *, device: torch.device, dtype: torch.dtype) -> VideoScorer:
    clip, processor = load_clip(model, device=device, dtype=dtype)
    return lambda videos, prompts: background_consistency(videos, clip, processor)


def _motion(model: str | None, *, device: torch.device, dtype: torch.dtype) -> VideoScorer:
    if model is None:
        raise ReNegError("vbench-motion-smoothness needs a frame interpolator: pass "
                         "vbench-motion-smoothness=FILE.pt (AMT-S exported to TorchScript, see the README)")
    interpolator = load_interpolator(model, device=device)  # VBench interpolates in fp32
    return lambda videos, prompts: motion_smoothness(videos, interpolator)


@dataclass(frozen=True)
class VideoMetric:
    """A VBench metric: ``factory(model, *, device, dtype) -> VideoScorer`` and the model it loads by default."""

    factory: Callable[..., VideoScorer]
    default_model: str | None = None


VIDEO_METRICS = {
    FLICKERING: VideoMetric(_flickering),
    "vbench-background-consistency": VideoMetric(_background, BACKGROUND_CLIP),
    "vbench-motion-smoothness": VideoMetric(_motion),
}


class VideoMetricSpec(MetricSpec):
    """A metric of whole videos, parsed as ``name[=PATH_OR_ID]`` like a reward metric; no options."""

    @property
    def model_or_default(self) -> str | None:
        return self.model if self.model is not None else VIDEO_METRICS[self.name].default_model

    @property
    def option_names(self) -> tuple[str, ...]:
        return ()

    def build(self, *, device: torch.device, dtype: torch.dtype) -> VideoScorer:
        return VIDEO_METRICS[self.name].factory(self.model_or_default, device=device, dtype=dtype)


METRIC_KINDS.update(dict.fromkeys(VIDEO_METRICS, VideoMetricSpec))


def fit_metrics(metrics: list[MetricSpec], model: LoadedModel) -> list[MetricSpec]:
    """The metrics for this model's outputs: VBench's are refused on images; on videos temporal flickering
    (model-free) is added as a diagnostic unless chosen."""
    if not is_video(model):
        chosen = [metric.text for metric in metrics if isinstance(metric, VideoMetricSpec)]
        if chosen:
            raise ReNegError(f"metric '{chosen[0]}' scores videos and {type(model.pipe).__name__} makes images: "
                             "drop it, or evaluate an AnimateDiff or text-to-video pipeline")
        return metrics
    if any(metric.name == FLICKERING for metric in metrics):
        return metrics
    return [*metrics, VideoMetricSpec(FLICKERING, FLICKERING, None, diagnostic=True)]


def video_scorers(metrics: list[MetricSpec], rewards: dict[str, Reward], model: LoadedModel) -> dict:
    """On videos, each reward metric scores a video by the mean of its frames' rewards (ReNeg Table 4);
    VBench's metrics and every metric on images score as built."""
    if not is_video(model):
        return rewards
    return {metric.text: rewards[metric.text] if isinstance(metric, VideoMetricSpec)
            else partial(frame_rewards, rewards[metric.text]) for metric in metrics}
