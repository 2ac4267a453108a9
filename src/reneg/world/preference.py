"""The world's preference models: "shapes-hps" (open_clip, HPS's family) and "shapes-pick" (transformers CLIP).

Both are trained the same way, in two phases: contrastive image-caption
learning (CLIP's InfoNCE), then preference pairs for a clean prompt, HPS-style
(cross-entropy over the pair's scaled cosines): the correct clean image is
preferred to the same scene degraded or with a wrong attribute (shape, object
colour or background). Images come as renders and as VAE reconstructions, so
that the models read generated images as well.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReNegError
from ..models.tiny import CLIP_MEAN, CLIP_STD
from .data import WorldData, loader, render_scenes
from .degrade import STAGE, drawn
from .render import Scene
from .scenes import caption as make_caption
from .scenes import sample_scene, true_caption
from .truth import reconstruct
from .vocab import COLOUR_NAMES, DEGRADATIONS, SHAPES

logger = logging.getLogger("reneg.world")
CONTRASTIVE_SHARE = 0.4  # of the steps; the rest adds preference pairs (gate run 5: 60%, was 40%)
#: the additive margin of the preference pairs (cosine units, gate run 5): the winner must beat the loser by it,
#: so that every flaw, each one step of the stated score, costs at least about this much on training pairs
#: (gate run 4: a cropped image cost 0.078, the smudge 0.059, a wrong shape 0.037)
PAIR_MARGIN = 0.1
#: the weight of the auxiliary shape loss (gate run 7): a linear probe from the normalised image embedding to the
#: shapes the scene requests (multi-hot, binary cross-entropy), trained with the model and discarded after, so
#: that the embedding the cosine reads carries shape (gate runs 2-6: contrastive and preference training alone
#: left shapes-hps reading a wrong shape on at most 0.76 of pairs; the ground truth, trained on labels, 0.98).
#: Rewards run 8: 3 (was 1); on 1600 pairs every recipe since gate run 7 reads shape at 0.78-0.83
SHAPE_AUX_WEIGHT = 3.0
#: the probe reads the unit-norm embedding times this (a fixed temperature, so that it can reach confident logits)
SHAPE_AUX_TEMPERATURE = 10.0
#: held-out pairs the build's pairwise accuracy is measured on (rewards run 8: 1600, about 400 of them a wrong
#: shape, a standard error near 0.02; 400 left the shape gate within noise)
EVAL_PAIRS = 1600


@dataclass
class DualEncoder:
    """What the trainer needs of a CLIP-like model: normalised features and the logit scale."""

    model: torch.nn.Module
    encode_image: Callable[[torch.Tensor], torch.Tensor]  # normalised pixels -> features
    encode_text: Callable[[list[str]], torch.Tensor]  # prompts -> features

    def scores(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its prompt, images in [0, 1]."""
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        image = F.normalize(self.encode_image((images - mean) / std), dim=-1)
        text = F.normalize(self.encode_text(prompts), dim=-1)
        return (image * text).sum(-1), image, text


#: the flaws of the stated score, and how often each is the one added to a pair's loser: a wrong shape 40%, colour,
#: background and cropped 8% each, the other defects 7.2% each (rewards run 8, chosen on validation pairs; gate
#: run 5 drew shape 25%, colour, background and cropped 10%, the others 9%; gate run 4 every attribute 1/6 and
#: every defect 1/12)
ATTRIBUTE_FLAWS = ("shape", "colour", "background")
FLAW_KINDS = ATTRIBUTE_FLAWS + DEGRADATIONS
_DRAWS = {"shape": 0.4, "colour": 0.08, "background": 0.08, "cropped": 0.08}
FLAW_WEIGHTS = np.array([_DRAWS.get(kind, (1 - sum(_DRAWS.values())) / (len(DEGRADATIONS) - 1))
                         for kind in FLAW_KINDS])
#: how many flaws the pair's winner already has (a pair is k flaws vs k + 1)
BASE_FLAWS = {0: 0.6, 1: 0.3, 2: 0.1}


def stated_score(flaws: int) -> float:
    """The score the preference models are trained to order by (v4): 1 - 0.25 per flaw, every flaw alike.

    A flaw is a wrong attribute (a shape, an object colour, the background) or a defect (named or not)."""
    return 1 - 0.25 * flaws


def _wrong_attribute(scene: Scene, rng: np.random.Generator, kind: str | None = None, *,
                     requested: int | None = None) -> Scene:
    """The scene with one attribute changed: a shape, an object colour or the background (``kind``), of one
    of its first ``requested`` things (a drawn scene's extra object comes after the requested ones)."""
    kind = kind or str(rng.choice(ATTRIBUTE_FLAWS))
    things = list(scene.things)
    index = int(rng.integers(requested or len(things)))
    thing = things[index]
    if kind == "shape":
        things[index] = replace(thing, shape=str(rng.choice([s for s in SHAPES if s != thing.shape])))
    elif kind == "colour":
        options = [c for c in COLOUR_NAMES if c not in (thing.colour, scene.background)]
        things[index] = replace(thing, colour=str(rng.choice(options)))
    else:
        options = [c for c in COLOUR_NAMES if c != scene.background and all(t.colour != c for t in things)]
        return replace(scene, things=tuple(things), background=str(rng.choice(options)))
    return replace(scene, things=tuple(things))


def add_flaw(scene: Scene, kind: str, rng: np.random.Generator, *, requested: int | None = None,
             draw: bool = False) -> Scene:
    """``scene`` with one more flaw of ``kind`` (an attribute or a degradation it does not have yet); with
    ``draw`` (a scene already drawn) a scene defect is drawn at once, so that nothing else changes."""
    if kind in ATTRIBUTE_FLAWS:
        return _wrong_attribute(scene, rng, kind, requested=requested)
    flawed = replace(scene, degradations=tuple(d for d in DEGRADATIONS if d in {*scene.degradations, kind}))
    return STAGE[kind](flawed, rng) if draw and kind in STAGE else flawed


def _draw_kinds(rng: np.random.Generator, count: int, exclude: set[str] = frozenset()) -> list[str]:
    weights = np.array([0 if k in exclude else w for k, w in zip(FLAW_KINDS, FLAW_WEIGHTS)])
    chosen = rng.choice(len(FLAW_KINDS), size=count, replace=False, p=weights / weights.sum())
    return [FLAW_KINDS[i] for i in chosen]


def preference_pairs(count: int, rng: np.random.Generator, generator: torch.Generator, vae=None):
    """(prompts, winners, losers, loser kinds) in [0, 1]: an image with k flaws against the same with one more.

    The prompt is the clean, complete caption of the flawless scene; the winner has k flaws (k from
    :data:`BASE_FLAWS`), the loser the winner's and one more of the kind reported (:data:`FLAW_WEIGHTS`), so
    that every flaw costs the same in the stated score (:func:`stated_score`). The scene defects of both
    images are drawn once, so the two differ only by the added flaw (and image defects' random strengths)."""
    prompts, winner_scenes, loser_scenes, kinds = [], [], [], []
    for _ in range(count):
        scene, category = sample_scene(rng, degraded=False)
        prompts.append(make_caption(scene, category, rng, mention=False))
        base_count = int(rng.choice(list(BASE_FLAWS), p=list(BASE_FLAWS.values())))
        *base, added = _draw_kinds(rng, base_count + 1)
        winner = scene
        for kind in base:
            winner = add_flaw(winner, kind, rng)
        winner = drawn(winner, rng)
        winner_scenes.append(winner)
        loser_scenes.append(add_flaw(winner, added, rng, requested=len(scene.things), draw=True))
        kinds.append(added)
    winners = render_scenes(winner_scenes, generator, draw=False)
    losers = render_scenes(loser_scenes, generator, draw=False)
    if vae is not None:
        winners, losers = reconstruct(vae, winners), reconstruct(vae, losers)
    return prompts, winners.float() / 255, losers.float() / 255, kinds


_SHAPE_WORD = re.compile(r"\b({})s?\b".format("|".join(SHAPES)))


def swap_shape(caption: str, rng: np.random.Generator) -> str | None:
    """The caption with one of its shape words replaced by another shape (None where it names no shape)."""
    found = list(_SHAPE_WORD.finditer(caption))
    if not found:
        return None
    match = found[int(rng.integers(len(found)))]
    other = str(rng.choice([s for s in SHAPES if s != match.group(1)]))
    return caption[:match.start(1)] + other + caption[match.end(1):]


def _hard_negative_logits(encoder: DualEncoder, image_features: torch.Tensor, captions: list[str],
                          rng: np.random.Generator) -> torch.Tensor:
    """One more text per image for InfoNCE: its caption with a shape swapped (a cosine of -100 where it names
    none: never chosen, and finite, so that the logit scale's gradient stays finite).

    In-batch negatives rarely differ from the positive by the shape alone, so without these a small CLIP
    reads colours and backgrounds and not shapes (world v4, gate G3: shape pairs at 0.44)."""
    swapped = [swap_shape(c, rng) for c in captions]
    has = torch.tensor([s is not None for s in swapped])
    logits = torch.full((len(captions), 1), -100.0)
    if has.any():
        texts = F.normalize(encoder.encode_text([s for s in swapped if s is not None]), dim=-1)
        logits[has, 0] = (image_features[has] * texts).sum(-1)
    return logits


def shape_targets(scenes: list[Scene]) -> torch.Tensor:
    """(N, len(SHAPES)) multi-hot of the shapes each scene requests (its ``things``; a drawn extra object, the
    defect, is not one of them)."""
    targets = torch.zeros(len(scenes), len(SHAPES))
    for row, scene in enumerate(scenes):
        for thing in scene.things:
            if thing.size != "extra":
                targets[row, SHAPES.index(thing.shape)] = 1.0
    return targets


def _embedding_dim(encoder: DualEncoder) -> int:
    with torch.no_grad():
        return encoder.encode_image(torch.zeros(1, 3, 64, 64)).shape[-1]


def train_preference(encoder: DualEncoder, data: WorldData, recon: torch.Tensor, vae, *, steps: int, seed: int,
                     batch_size: int = 96, pair_count: int = 32, lr: float = 1e-3) -> None:
    """Phase 1: InfoNCE on (image, its true caption) with a shape-swapped caption as each image's hard negative;
    phase 2: the same plus HPS-style preference pairs, with an additive margin (:data:`PAIR_MARGIN`). Both phases
    add an auxiliary shape loss on the image embedding (:data:`SHAPE_AUX_WEIGHT`; its probe is not kept).

    The captions are each scene's clean, complete description, not the web alt-text the generator learns from:
    a preference model is trained on curated data (HPS, PickScore), and on alt-text whose shapes are wrong a
    quarter of the time a small CLIP barely reads shape (world v4, gate run 2: shape pairs at 0.55)."""
    torch.manual_seed(seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(_embedding_dim(encoder), len(SHAPES))
    params = [p for p in encoder.model.parameters() if p.requires_grad] + list(probe.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    # at least 2 warm-up steps: OneCycleLR divides by zero on fewer (a smoke build's --scale 0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=max(0.1, 2 / steps))
    batches, start = loader(len(data), batch_size, seed=seed), time.time()
    scale = encoder.model.logit_scale
    for step in range(steps):
        indices = next(batches)
        use_recon = indices < len(recon)
        images = torch.where(use_recon.view(-1, 1, 1, 1), recon[indices.clamp(max=len(recon) - 1)],
                             data.images[indices]).float() / 255
        captions = [true_caption(data.scenes[i], rng) for i in indices.tolist()]
        _, image_features, text_features = encoder.scores(images, captions)
        logits = scale.exp() * image_features @ text_features.T
        target = torch.arange(len(indices))
        hard = _hard_negative_logits(encoder, image_features, captions, rng) * scale.exp()
        loss = (F.cross_entropy(torch.cat([logits, hard], dim=1), target) + F.cross_entropy(logits.T, target)) / 2
        shapes = shape_targets([data.scenes[i] for i in indices.tolist()])
        loss = loss + SHAPE_AUX_WEIGHT * F.binary_cross_entropy_with_logits(
            probe(SHAPE_AUX_TEMPERATURE * image_features), shapes)
        if step >= CONTRASTIVE_SHARE * steps:
            prompts, winners, losers, _ = preference_pairs(pair_count, rng, generator, vae if step % 2 else None)
            s_w, _, _ = encoder.scores(winners, prompts)
            s_l, _, _ = encoder.scores(losers, prompts)
            pair_logits = scale.exp() * torch.stack([s_w - PAIR_MARGIN, s_l], dim=1)
            loss = loss + F.cross_entropy(pair_logits, torch.zeros(len(prompts), dtype=torch.long))
        if not torch.isfinite(loss):
            raise ReNegError(f"the preference loss is not finite at step {step + 1}: lower the learning rate")
        loss.backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        with torch.no_grad():
            scale.clamp_(0, 4.6052)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            logger.info("[pref] step %d/%d  loss %.4f  (%.0fs)", step + 1, steps, loss.item(), time.time() - start)


@torch.no_grad()
def pairwise_accuracy(score: Callable, vae, *, count: int = EVAL_PAIRS, seed: int = 4242) -> dict[str, float]:
    """Held-out share of pairs (VAE-reconstructed) in which the preferred image scores higher, by added flaw."""
    prompts, winners, losers, kinds = preference_pairs(count, np.random.default_rng(seed),
                                                       torch.Generator().manual_seed(seed), vae)
    right = (score(winners, prompts) > score(losers, prompts)).float()
    result = {"all": round(float(right.mean()), 4)}
    for kind in sorted(set(kinds)):
        mask = torch.tensor([k == kind for k in kinds])
        result[kind] = round(float(right[mask].mean()), 4)
    return result


# -- shapes-hps: an open_clip CLIP from a custom small config (HPSv2's family) ---------------------------------
HPS_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _open_clip_encoder(model) -> DualEncoder:
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # OpenAI CLIP's BPE, context 77 (no download)
    return DualEncoder(model, model.encode_image, lambda prompts: model.encode_text(tokenizer(prompts)))


def train_hps(data: WorldData, recon: torch.Tensor, vae, *, steps: int, seed: int, out: Path,
              eval_pairs: int = EVAL_PAIRS) -> dict:
    """Train shapes-hps and save it in open_clip's own layout (``open_clip_config.json`` + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**HPS_CONFIG)
    encoder = _open_clip_encoder(model)
    train_preference(encoder, data, recon, vae, steps=steps, seed=seed)
    model.eval().requires_grad_(False)
    accuracy = pairwise_accuracy(lambda x, p: encoder.scores(x, p)[0], vae, count=eval_pairs)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    preprocess = {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "resize_mode": "longest"}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": HPS_CONFIG, "preprocess_cfg": preprocess}))
    return accuracy


# -- shapes-pick: a transformers CLIPModel of another shape and seed (PickScore's role) ------------------------
def pick_model():
    from transformers import CLIPConfig, CLIPModel

    return CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77),
        vision_config=dict(image_size=64, patch_size=8, hidden_size=96, intermediate_size=384,
                           num_hidden_layers=3, num_attention_heads=4),
        projection_dim=48,
    ))


def _features(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.pooler_output


def train_pick(data: WorldData, recon: torch.Tensor, vae, *, steps: int, seed: int, out: Path,
               eval_pairs: int = EVAL_PAIRS) -> dict:
    """Train shapes-pick and save it as a transformers CLIPModel + CLIPProcessor directory."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from ..models.tokenizers import build_clip_tokenizer

    torch.manual_seed(seed)
    model, tokenizer = pick_model(), build_clip_tokenizer()

    def encode_text(prompts):
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return _features(model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask))

    encoder = DualEncoder(model, lambda x: _features(model.get_image_features(pixel_values=x)), encode_text)
    train_preference(encoder, data, recon, vae, steps=steps, seed=seed)
    model.eval().requires_grad_(False)
    accuracy = pairwise_accuracy(lambda x, p: encoder.scores(x, p)[0], vae, count=eval_pairs)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                         image_mean=CLIP_MEAN, image_std=CLIP_STD)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return accuracy
