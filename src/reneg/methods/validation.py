"""The validation reward: the curve users read while training (any trainer of :mod:`reneg.methods.loop`).

The batch reward of the one-step prediction is noisy (new prompts, noise and t every step). Every
``--validate-every`` steps this listener generates fully sampled images for ``--validate-prompts`` fixed
training prompts from fixed x_T with what is being learned (``trainer.validation_reward``: ReNeg's current
embedding, NPO's delta on the negative branch) and scores them with the training reward; step 0 is the
starting point (the null text; delta off). Values go to ``<out>.validation.jsonl`` and into the step record
(for trackers), and the reward plot draws them.

64 prompts by default: on the shapes world the quickstart's gain over the null text is ~0.009 with a per-item
standard deviation of ~0.05, so 16 prompts (the old default) measure it with a standard error larger than the
effect.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.denoiser import BASE
from ..core.guidance import CFG, Rule
from ..core.rollout import guided_images
from ..families import TextConditioning
from ..rewards.video import frame_rewards
from .listeners import keep_steps_before
from .randomness import mixed_seed

#: mixed into the seed of the validation noise, so that it never equals a training draw
VALIDATION_STREAM = 2**31 - 1
#: default size of the fixed validation set (``--validate-prompts``)
VALIDATION_PROMPTS = 64


@torch.no_grad()
def full_sample_rewards(family, reward, negative: TextConditioning, prompts: list[str], latents: torch.Tensor, *,
                        guidance_scale: float, steps: int, resolution: int, batch_size: int,
                        negative_weights=BASE, rule: Rule = CFG) -> torch.Tensor:
    """``reward`` of each fully sampled image of ``prompts`` from ``latents`` with ``negative`` (on the negative
    branch's ``negative_weights``: NPO's delta) under ``rule`` (CFG, or NAG) (fp32, CPU)."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        images = guided_images(family, batch, negative, latents[start:start + batch_size],
                               guidance_scale=guidance_scale, steps=steps, resolution=resolution,
                               negative_weights=negative_weights, rule=rule)
        scores.append(frame_rewards(reward, images, batch).float().cpu())
    return torch.cat(scores)


def validation(path: str | Path, *, every: int, count: int = VALIDATION_PROMPTS, fresh: bool = True):
    """A listener that measures the validation reward every ``every`` steps on ``count`` fixed prompts."""
    path, state = Path(path), {}

    def write(step: int, value: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh and not state.get("written"):
            keep_steps_before(path, step)  # a resumed run: what was measured after its checkpoint is measured again
        mode = "w" if fresh and not state.get("written") else "a"
        with path.open(mode) as handle:
            handle.write(json.dumps({"step": step, "validation_reward": value, "prompts": count}) + "\n")
        state["written"] = True

    def listen(trainer, record) -> None:
        if "prompts" not in state:
            texts = list(trainer.prompt_texts)
            random.Random(trainer.config.seed).shuffle(texts)
            state["prompts"] = (texts * count)[:count]
            generator = torch.Generator().manual_seed(mixed_seed(trainer.config.seed, VALIDATION_STREAM))
            state["latents"] = trainer.family.initial_latents(count, resolution=trainer.resolution,
                                                              generator=generator)
            if record.step == 1:  # step 0: the initial embedding, the null text
                initial = trainer.validation_reward(state["prompts"], state["latents"], initial=True)
                write(0, initial)
                state["initial"] = initial
        if record.step % every == 0 or record.step == trainer.config.train_steps:
            value = trainer.validation_reward(state["prompts"], state["latents"])
            record.validation_reward = value
            write(record.step, value)
            since = f" (step 0: {state['initial']:.4f})" if "initial" in state else ""
            tqdm.write(f"step {record.step}  validation reward {value:.5f} on {count} fixed prompts{since}",
                       file=sys.stderr)

    return listen
