"""How far can one global negative embedding move the world's reward? (issue 21: what limits ReNeg there)

    python scripts/world_leverage.py [--guidance-scale G] [--objective one-step|full-chain]
        [--train-steps N] [--lr LR] [--in-sample] [--negative FILE ...] [--batches N]

Everything runs on training prompts (the world's train.txt), never on the benchmark. It measures the
full-sample reward (DDIM 20, CFG at G, the training reward) of fixed batches (``--batches`` 24 of 8 items:
prompt and x_T drawn as training draws them, from seed 777) with the null text, the handcrafted negative,
each --negative file, and an embedding it trains itself from the null text (AdamW, cosine lr, batch 8):

- ``--objective one-step``: ReNeg's objective (``reneg.methods.reneg.objective.reneg_objective``: x_T -> x_t without
  gradient, x0_pred (Eq. 6) with gradient, t in the last third), as ``reneg train`` runs it;
- ``--objective full-chain``: the exact gradient of the full-sample reward, through every step (ReNeg
  Sec. 4.1's Jacobian);
- ``--in-sample``: train on the measured batches themselves: a ceiling for any global embedding on them.

Prints one line per negative (mean reward and win rate vs null, ties half) and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler

from reneg.core.rollout import rollout, text_branches
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.evaluate.metrics import win_rate
from reneg.families import TextConditioning
from reneg.methods.randomness import draw_batch
from reneg.methods.reneg.objective import reneg_objective
from reneg.methods.validation import full_sample_rewards
from reneg.models.loading import load_model
from reneg.rewards import build_reward
from reneg.world import path

MEASURE_SEED, BATCH, STEPS, RESOLUTION = 777, 8, 20, 64


def batches(family, prompts, *, seed, first_step, count, grad_window):
    return [draw_batch(family, prompts, seed=seed, step=step, indices=range(BATCH), resolution=RESOLUTION,
                       steps=STEPS, grad_window=grad_window) for step in range(first_step, first_step + count)]


def rewards_of(family, reward, negative, measured, scale) -> list[float]:
    """Per-item full-sample rewards of the measured batches (reneg.methods.validation's scoring, as the curve users read)."""
    return full_sample_rewards(family, reward, negative, [p for b in measured for p in b.prompts],
                               torch.cat([b.latents for b in measured]), guidance_scale=scale, steps=STEPS,
                               resolution=RESOLUTION, batch_size=BATCH).tolist()


def train(family, reward, prompts, measured, args) -> tuple[TextConditioning, float]:
    """An embedding trained from the null text with ``args.objective``; returns it and the seconds taken."""
    n = family.null_text().embeds.clone().float().requires_grad_(True)
    optimizer = torch.optim.AdamW([n], lr=args.lr, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=args.train_steps)
    window = math.ceil(STEPS / 3)
    start = time.perf_counter()
    for step in range(1, args.train_steps + 1):
        if args.in_sample:
            batch = measured[(step - 1) % len(measured)]
        else:
            batch = draw_batch(family, prompts, seed=0, step=step, indices=range(BATCH), resolution=RESOLUTION,
                               steps=STEPS, grad_window=window)
        negative = TextConditioning(n, None)
        if args.objective == "one-step":
            loss, _ = reneg_objective(family, reward, batch, negative, guidance_scale=args.guidance_scale,
                                      steps=STEPS, resolution=RESOLUTION)
        else:
            branches = text_branches(family, family.encode(batch.prompts), negative, resolution=RESOLUTION)
            images = rollout(family, branches, batch.latents, steps=STEPS, guidance_scale=args.guidance_scale,
                             differentiable=True)
            loss = -reward(images, batch.prompts).float().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return TextConditioning(n.detach(), None), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidance-scale", type=float, default=1.5)
    parser.add_argument("--objective", choices=["one-step", "full-chain"], default="one-step")
    parser.add_argument("--train-steps", type=int, default=120, help="0: measure the given negatives only")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--in-sample", action="store_true", help="train on the measured batches (a ceiling)")
    parser.add_argument("--negative", action="append", default=[], metavar="FILE")
    parser.add_argument("--batches", type=int, default=24, help="measured batches of 8 items (default: 24)")
    args = parser.parse_args()
    if args.train_steps < 0 or args.batches < 1 or args.lr <= 0:
        parser.error("--train-steps must be >= 0, --batches >= 1 and --lr > 0")
    for file in args.negative:
        if not Path(file).is_file():
            parser.error(f"--negative: no file {file}")
    torch.manual_seed(0)
    model = load_model(None)
    family = model.family
    reward = build_reward(model.defaults.reward)
    prompts = [line.strip() for line in path("prompts/train.txt").read_text().splitlines() if line.strip()]
    measured = batches(family, prompts, seed=MEASURE_SEED, first_step=1, count=args.batches,
                       grad_window=math.ceil(STEPS / 3))
    negatives = {"null": family.null_text(), "handcrafted": family.encode([model.defaults.handcrafted_negative])}
    for file in args.negative:
        try:
            negatives[file] = TextConditioning(NegativeEmbedding.load(file).for_pipeline(model.pipe).tensor[None], None)
        except ReNegError as error:
            parser.error(f"--negative: {error}")
    seconds = None
    if args.train_steps:
        label = f"trained here ({args.objective}, {args.train_steps} steps, lr {args.lr:g}" + (
            ", in-sample)" if args.in_sample else ")")
        negatives[label], seconds = train(family, reward, prompts, measured, args)
    scores = {name: rewards_of(family, reward, negative, measured, args.guidance_scale)
              for name, negative in negatives.items()}
    null, handcrafted = scores["null"], scores["handcrafted"]
    for name, values in scores.items():
        print(f"{name}: {sum(values) / len(values):.4f} (win rate vs null {win_rate(values, null):.3f}, "
              f"vs handcrafted {win_rate(values, handcrafted):.3f})")
    print(json.dumps({"guidance_scale": args.guidance_scale, "items": len(null), "train_seconds": seconds,
                      "mean": {k: sum(v) / len(v) for k, v in scores.items()},
                      "win_rate_vs_null": {k: win_rate(v, null) for k, v in scores.items()},
                      "win_rate_vs_handcrafted": {k: win_rate(v, handcrafted) for k, v in scores.items()}}))


if __name__ == "__main__":
    main()
