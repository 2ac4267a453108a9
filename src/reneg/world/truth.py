"""The ground-truth scorer (attribute classifier + degradation detector) and the captioner built on it.

Trained on renders and on their VAE reconstructions (so that it reads generated
images too), with labels taken from the scenes: which shapes and object colours
are present, the background colour, and which degradations were applied.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import WorldData, loader, render_scenes
from .render import Scene
from .scenes import Truth, parse_prompt, sample_scene
from .scenes import caption as scene_caption
from .vocab import COLOUR_NAMES, CURRENT, DEGRADATIONS, SHAPES, V3, Vocabulary

logger = logging.getLogger("reneg.world")
HEADS = ("shapes", "colours", "background", "degradations")


def label_names(vocabulary: Vocabulary) -> dict[str, tuple[str, ...]]:
    """The names behind each head's outputs (the background head reads the colour names)."""
    return {"shapes": vocabulary.shapes, "colours": vocabulary.colour_names, "background": vocabulary.colour_names,
            "degradations": vocabulary.flaws}


class TruthScorer(nn.Module):
    """A small CNN on 64x64 images (3x3 convolutions, 64 -> 4 px, receptive field > 64 px), one head per attribute."""

    def __init__(self, width: int = 32, labels: dict[str, tuple[str, ...]] | None = None):
        super().__init__()
        self.labels = {k: tuple(v) for k, v in (labels or label_names(CURRENT)).items()}
        layers, channels = [], 3
        for out, stride in ((width, 1), (width, 2), (2 * width, 1), (2 * width, 2), (4 * width, 1), (4 * width, 2),
                            (8 * width, 2)):
            layers += [nn.Conv2d(channels, out, 3, stride, 1), nn.GroupNorm(8, out), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(channels * 2, len(self.labels[name])) for name in HEADS})
        self.config = {"width": width, "labels": self.labels}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for images in [0, 1], (B, 3, H, W) (resized to 64x64)."""
        if images.shape[-1] != 64:
            images = F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        h = self.features(images * 2 - 1)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return {name: head(pooled) for name, head in self.heads.items()}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({"architecture": "TruthScorer", **self.config}))


@lru_cache(maxsize=4)
def load_truth(directory: str | Path) -> TruthScorer:
    """A saved :class:`TruthScorer` (fp16 or fp32 file), in fp32 eval mode, frozen."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    # v3.1's scorer predates recorded labels: its heads are v3's vocabulary
    model = TruthScorer(width=config["width"], labels=config.get("labels") or label_names(V3))
    model.load_state_dict({k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()})
    return model.eval().requires_grad_(False)


def labels(scene: Scene) -> dict[str, torch.Tensor]:
    shapes = torch.zeros(len(SHAPES))
    colours = torch.zeros(len(COLOUR_NAMES))
    for thing in scene.things:
        shapes[SHAPES.index(thing.shape)] = 1
        colours[COLOUR_NAMES.index(thing.colour)] = 1
    degradations = torch.zeros(len(DEGRADATIONS))
    for name in scene.degradations:
        degradations[DEGRADATIONS.index(name)] = 1
    return {"shapes": shapes, "colours": colours, "background": torch.tensor(COLOUR_NAMES.index(scene.background)),
            "degradations": degradations}


def _loss(logits: dict, target: dict) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(logits["shapes"], target["shapes"])
            + F.binary_cross_entropy_with_logits(logits["colours"], target["colours"])
            + F.cross_entropy(logits["background"], target["background"])
            + F.binary_cross_entropy_with_logits(logits["degradations"], target["degradations"]))


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """VAE round trip of uint8 images (N, 3, 64, 64) -> uint8."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float() / 127.5 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(out)


def train_truth(data: WorldData, recon: torch.Tensor, *, steps: int, batch_size: int = 64, seed: int = 0,
                lr: float = 1e-3) -> TruthScorer:
    """Train on renders and (half of each batch) VAE reconstructions ``recon`` of the first images."""
    torch.manual_seed(seed)
    recon_count = len(recon)
    targets = [labels(scene) for scene in data.scenes]
    model = TruthScorer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # at least 2 warm-up steps: OneCycleLR divides by zero on fewer (a smoke build's --scale 0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=max(0.1, 2 / steps))
    batches, recon_batches, start = loader(len(data), batch_size // 2, seed=seed), loader(recon_count, batch_size // 2,
                                                                                         seed=seed + 1), time.time()
    for step in range(steps):
        a, b = next(batches), next(recon_batches)
        images = torch.cat([data.images[a], recon[b]]).float() / 255
        target = {k: torch.stack([targets[i][k] for i in torch.cat([a, b]).tolist()]) for k in HEADS}
        loss = _loss(model(images), target)
        loss.backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            logger.info("[truth] step %d/%d  loss %.4f  (%.0fs)", step + 1, steps, loss.item(), time.time() - start)
    return model.eval().requires_grad_(False)


def _auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    greater = (positive[:, None] > negative[None, :]).float().mean()
    ties = (positive[:, None] == negative[None, :]).float().mean()
    return float(greater + 0.5 * ties)


@torch.no_grad()
def detectability(model: TruthScorer, vae, *, count: int = 200, seed: int = 7) -> dict[str, float]:
    """Per degradation: AUC of the detector on VAE reconstructions, degraded vs clean versions of new scenes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    scenes = [sample_scene(rng, degraded=False)[0] for _ in range(count)]
    clean = reconstruct(vae, render_scenes(scenes, generator)).float() / 255
    clean_scores = torch.sigmoid(model(clean)["degradations"])
    result = {}
    for index, name in enumerate(DEGRADATIONS):
        degraded_scenes = [Scene(s.things, s.background, (name,)) for s in scenes]
        degraded = reconstruct(vae, render_scenes(degraded_scenes, generator)).float() / 255
        result[name] = round(_auc(torch.sigmoid(model(degraded)["degradations"])[:, index], clean_scores[:, index]), 4)
    return result


@torch.no_grad()
def attribute_accuracy(model: TruthScorer, vae, *, count: int = 300, seed: int = 11) -> dict[str, dict[str, float]]:
    """The scorer's own accuracy per attribute on clean new scenes: on renders, and on their VAE reconstructions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    drawn = [sample_scene(rng, degraded=False) for _ in range(count)]
    prompts = [scene_caption(scene, category, rng, mention=False) for scene, category in drawn]
    renders = render_scenes([scene for scene, _ in drawn], torch.Generator().manual_seed(seed))
    result = {}
    for name, images in (("renders", renders), ("reconstructions", reconstruct(vae, renders))):
        judged = judge(model, images.float() / 255, prompts)
        result[name] = {k: round(float(judged[k].nanmean()), 4) for k in ("shape", "colour", "background")}
    return result


def _top(probabilities: torch.Tensor, names: tuple[str, ...], k: int) -> set[str]:
    return {names[j] for j in probabilities.argsort(descending=True)[:k].tolist()}


@torch.no_grad()
def judge(model: TruthScorer, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Per image: shape / colour / background right (1, 0, or NaN where the prompt names none), cleanliness."""
    logits = model(images.float())
    shapes_p, colours_p = torch.sigmoid(logits["shapes"]), torch.sigmoid(logits["colours"])
    background = logits["background"].argmax(dim=1)
    flaws = torch.sigmoid(logits["degradations"])
    cleanliness = 1 - flaws.amax(dim=1)
    shape_names, colour_names = model.labels["shapes"], model.labels["colours"]
    result = {"shape": [], "colour": [], "background": []}
    for i, prompt in enumerate(prompts):
        truth: Truth = parse_prompt(prompt)
        # the k most likely shapes (colours), k as many as the prompt names: a thresholded multi-label
        # set failed mostly by naming nothing on a clean render
        predicted_shapes = _top(shapes_p[i], shape_names, len(set(truth.shapes)))
        predicted_colours = _top(colours_p[i], colour_names, len(set(truth.colours)))
        result["shape"].append(float(predicted_shapes == set(truth.shapes)) if truth.shapes else float("nan"))
        result["colour"].append(float(predicted_colours == set(truth.colours)) if truth.colours else float("nan"))
        result["background"].append(float(model.labels["background"][background[i]] == truth.background)
                                    if truth.background else float("nan"))
    judged = {k: torch.tensor(v) for k, v in result.items()}
    judged["adherence"] = torch.stack(list(judged.values())).nanmean(dim=0)
    judged["cleanliness"] = cleanliness
    judged["flagged"] = (flaws > 0.5).any(dim=1).float()
    return judged


@torch.no_grad()
def caption(model: TruthScorer, images: torch.Tensor) -> list[str]:
    """Describe each image in world words (the captioner of auto-DNP): objects, background, degradations."""
    logits = model(images.float())
    shape_names, colour_names = model.labels["shapes"], model.labels["colours"]
    flaw_names, named = model.labels["degradations"], set(model.labels["degradations"]) - {"smudge"}
    captions = []
    for i in range(len(images)):
        shape_p, colour_p = torch.sigmoid(logits["shapes"][i]), torch.sigmoid(logits["colours"][i])
        count = 2 if (shape_p > 0.5).sum() >= 2 else 1
        shapes = [shape_names[j] for j in shape_p.argsort(descending=True)[:count].tolist()]
        colours = [colour_names[j] for j in colour_p.argsort(descending=True)[:count].tolist()]
        if count == 2 and colour_p.sort(descending=True).values[1] < 0.5:
            colours = colours[:1] * 2
        objects = " and ".join(f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in zip(colours, shapes))
        background = model.labels["background"][int(logits["background"][i].argmax())]
        text = f"{objects} on {'an' if background[0] in 'aeiou' else 'a'} {background} background"
        # the captioner speaks the captions' language: the unnamed flaw has no word
        degradations = [name for j, name in enumerate(flaw_names)
                        if name in named and torch.sigmoid(logits["degradations"][i, j]) > 0.5]
        captions.append(text + (", " + ", ".join(degradations) if degradations else ""))
    return captions
