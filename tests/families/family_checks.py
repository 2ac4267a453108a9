"""Checks shared by the SDXL and SD3 family tests (tiny random-weight pipelines of the real architectures)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from reneg.cli import main
from reneg.core.denoiser import GuidedDenoiser
from reneg.core.rollout import rollout, text_branches
from reneg.embedding import NegativeEmbedding
from reneg.families import TextConditioning, family_for
from reneg.generate import generate_images

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]
TRAIN_PROMPTS = ["a red circle on a blue background", "a green square on a white background",
                 "a yellow star on a black background", "a purple triangle on an orange background"]


def random_negative(family, *, seed: int = 0, metadata: dict | None = None) -> NegativeEmbedding:
    """A random (L, D) + pooled (P,) embedding of the family's shapes, with its fingerprint."""
    (length, width), pooled = family.negative_shape()
    generator = torch.Generator().manual_seed(seed)
    return NegativeEmbedding(torch.randn(length, width, generator=generator),
                             {"text_encoder_fingerprint": family.fingerprint(), **(metadata or {})},
                             torch.randn(pooled, generator=generator))


def reneg_generate(directory, file, out, *, seed: int, steps: int, guidance_scale: float,
                   resolution: int | None = None) -> np.ndarray:
    """``reneg generate --negative FILE`` (None: no negative) through the CLI; the PNGs as (N, H, W, 3) in [0, 1]."""
    args = ["generate", "--model", str(directory), "--seed", str(seed), "--steps", str(steps), "--guidance-scale",
            str(guidance_scale), "--num-images", "2", "--batch-size", "3", "--device", "cpu", "--out", str(out)]
    args += [] if file is None else ["--negative", str(file)]
    args += [] if resolution is None else ["--resolution", str(resolution)]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    assert main(args) == 0
    record = json.loads((out / "generation.json").read_text())
    return np.stack([np.asarray(Image.open(out / item["file"])) / 255.0 for item in record["images"]]), record


def diffusers_images(pipe, negative: NegativeEmbedding, *, seed: int, steps: int, guidance_scale: float,
                     rows: int = len(PROMPTS)):
    """The pipeline's own images with ``negative_prompt_embeds`` and ``negative_pooled_prompt_embeds``.

    ``rows``: how many rows of the negative the pipeline wants. SDXL's ``encode_prompt`` repeats given negative
    embeddings per image itself (one row per prompt); SD3's (diffusers 0.42) does not, so it needs one row per
    image (prompts x images per prompt), else its transformer fails on mismatched batches.
    """
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, negative_prompt_embeds=negative.expand(rows),
                negative_pooled_prompt_embeds=negative.expand_pooled(rows), num_images_per_prompt=2,
                num_inference_steps=steps, guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(seed), output_type="np").images


def _linear_reward(images: torch.Tensor) -> torch.Tensor:
    weights = torch.randn(images.shape, generator=torch.Generator().manual_seed(2), dtype=images.dtype)
    return (images * weights).sum()


def _last_step_objective(family, prompts, negative: TextConditioning, x_t, *, steps: int, grad_from: int,
                         guidance_scale: float) -> torch.Tensor:
    """R(decode(x0_pred)) from a frozen x_t: the one guided call at step ``grad_from`` alone."""
    family.set_timesteps(steps, resolution=64)
    t = family.scheduler.timesteps[grad_from]
    branches = text_branches(family, prompts, negative, resolution=64)
    output = GuidedDenoiser(family.model, branches, guidance_scale)(x_t, t)
    return _linear_reward(family.decode(family.predict_x0(output, x_t, t)))


def check_gradient_matches_finite_differences(pipe64, *, steps: int = 6, grad_from: int = 4,
                                              guidance_scale: float = 5.0, h: float = 1e-4,
                                              rtol: float = 1e-5) -> tuple[float, float]:
    """The rollout's gradient w.r.t. the negative (sequence and pooled) equals central differences of the
    objective at the stop-gradient point x_t (float64), step ``h``, to ``rtol``. Returns (analytic, numeric) of
    the joint direction."""
    family = family_for(pipe64)
    prompts = family.encode(PROMPTS)
    null = family.null_text().to(dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    start = TextConditioning(null.embeds + 0.1 * torch.randn(null.embeds.shape, generator=generator,
                                                             dtype=torch.float64),
                             null.pooled + 0.1 * torch.randn(null.pooled.shape, generator=generator,
                                                             dtype=torch.float64))
    embeds, pooled = start.embeds.clone().requires_grad_(True), start.pooled.clone().requires_grad_(True)
    latents = family.initial_latents(len(PROMPTS), resolution=64, generator=torch.Generator().manual_seed(1))
    captured = {}
    x0 = rollout(family, text_branches(family, prompts, TextConditioning(embeds, pooled), resolution=64), latents,
                 steps=steps, guidance_scale=guidance_scale, grad_from=grad_from, decode=False,
                 callback=lambda i, t, x: captured.update(x_t=x))
    _linear_reward(family.decode(x0)).backward()
    directions = (torch.randn(embeds.shape, generator=generator, dtype=torch.float64),
                  torch.randn(pooled.shape, generator=generator, dtype=torch.float64))
    results = []
    for which in ("embeds", "pooled", "both"):
        d_embeds = directions[0] if which != "pooled" else torch.zeros_like(directions[0])
        d_pooled = directions[1] if which != "embeds" else torch.zeros_like(directions[1])
        analytic = ((embeds.grad * d_embeds).sum() + (pooled.grad * d_pooled).sum()).item()
        with torch.no_grad():
            values = [_last_step_objective(family, prompts, TextConditioning(start.embeds + s * h * d_embeds,
                                                                             start.pooled + s * h * d_pooled),
                                           captured["x_t"], steps=steps, grad_from=grad_from,
                                           guidance_scale=guidance_scale) for s in (1, -1)]
        numeric = ((values[0] - values[1]) / (2 * h)).item()
        assert abs(analytic) > 0, which
        assert abs(analytic - numeric) <= rtol * abs(numeric), (which, analytic, numeric)
        results.append((analytic, numeric))
    return results[-1]


def mean_reward(model, reward, negative, *, steps: int = 4) -> float:
    """Reward of fully sampled images (not the one-step prediction) on the training prompts, fixed seeds."""
    prompts = TRAIN_PROMPTS * 2
    batches = generate_images(model, prompts, negative, guidance_scale=7.5, steps=steps, resolution=64,
                              generator=torch.Generator().manual_seed(0), batch_size=8)
    with torch.no_grad():
        return reward(torch.cat(list(batches)), prompts).mean().item()


def train_args(model: str, reward_dir, out, *, seed: int) -> list[str]:
    args = ["train", "--model", model, "--reward", "pickscore", "--reward-model", str(reward_dir), "--train-steps",
            "10", "--batch-size", "4", "--micro-batch-size", "2", "--steps", "4", "--grad-window", "2", "--lr",
            "0.2", "--seed", str(seed), "--device", "cpu", "--out", str(out), "--log-every", "0",
            "--validate-every", "0"]
    for prompt in TRAIN_PROMPTS:
        args += ["--prompt", prompt]
    return args


def learned_after_a_short_training(model_name: str, tmp_path):
    """10 steps of `reneg train` (seed 0; seeds 0 and 1 both gained, notes/sdxl.md) against a tiny PickScore:
    the learned embedding, after checking that it raised the reward of fully sampled images."""
    from reneg.embedding import NegativeEmbedding
    from reneg.models.loading import load_model
    from reneg.models.tiny import tiny_clip
    from reneg.rewards import build_reward

    reward_dir = tmp_path / "pickscore"
    clip, processor = tiny_clip()
    clip.save_pretrained(reward_dir)
    processor.save_pretrained(reward_dir)
    model = load_model(model_name)
    reward = build_reward("pickscore", model=str(reward_dir))
    before = mean_reward(model, reward, model.family.null_text())
    out = tmp_path / "neg.safetensors"
    assert main(train_args(model_name, reward_dir, out, seed=0)) == 0
    learned = NegativeEmbedding.load(out).for_pipeline(model.pipe)
    gain = mean_reward(model, reward, learned) - before
    assert gain > 0, (before, gain)
    return learned


def refusal_line(capsys, args: list[str]) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]
