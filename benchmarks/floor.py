"""Section ``floor``: a training step / the sum of its parts timed alone (text encoding, the no-grad CFG prefix,
the grad call, VAE decode, reward), at the step's own k. Target <= 1.05."""

from __future__ import annotations

from benchmarks.common import median, now
from benchmarks.common import trainer as make_trainer


def step_parts(trainer, k: int) -> dict[str, float]:
    """Seconds of each part of a training step at step index k, each timed alone (synchronised on CUDA)."""
    import torch

    from reneg.core.denoiser import GuidedDenoiser
    from reneg.core.rollout import text_branches
    from reneg.methods.randomness import draw_batch

    family, device = trainer.family, trainer.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = draw_batch(family, trainer.prompt_texts, seed=trainer.config.seed, step=trainer.step,
                       indices=range(trainer.config.batch_size), resolution=trainer.resolution, steps=trainer.steps,
                       grad_window=trainer.grad_window)
    negative = trainer.params.negative()
    parts = {}
    start = now()
    branches = text_branches(family, family.encode(batch.prompts), negative, resolution=trainer.resolution)
    sync()
    parts["text encoding"] = now() - start
    denoiser = GuidedDenoiser(family.model, branches, trainer.params.scale())
    scheduler = family.scheduler
    start = now()
    latents = batch.latents.to(device)
    scheduler.set_timesteps(trainer.steps, device=device)
    with torch.no_grad():
        for t in scheduler.timesteps[:k]:
            latents = scheduler.step(denoiser(scheduler.scale_model_input(latents, t), t), t, latents,
                                     return_dict=False)[0]
    sync()
    parts["no-grad CFG prefix"] = now() - start
    t = scheduler.timesteps[k]
    start = now()
    x0 = family.predict_x0(denoiser(scheduler.scale_model_input(latents, t), t), latents, t)
    x0.backward(torch.full_like(x0, 1e-3))
    sync()
    parts["grad call (fwd + bwd)"] = now() - start
    latent = x0.detach().requires_grad_()
    start = now()
    images = family.decode(latent)
    images.backward(torch.full_like(images, 1e-3))
    sync()
    parts["VAE decode (fwd + bwd)"] = now() - start
    pixels = images.detach().requires_grad_()
    start = now()
    (-trainer.reward(pixels, batch.prompts).float().mean()).backward()
    sync()
    parts["reward (fwd + bwd)"] = now() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return parts


def floor(rounds: int, device: str) -> str:
    trainer = make_trainer(8, 30, 10, device)
    trainer.train_step()  # warm-up
    steps, parts, ratios = [], {}, []
    for _ in range(rounds):
        record = trainer.train_step()
        trainer.step -= 1  # time the parts on the very batch and k of the step just taken
        timed = step_parts(trainer, record.grad_from)
        trainer.step += 1
        steps.append(record.seconds)
        for name, seconds in timed.items():
            parts.setdefault(name, []).append(seconds)
        ratios.append(record.seconds / sum(timed.values()))
    lines = ["### Floor ratio: a training step / the sum of its parts timed alone",
             f"world, batch 8, T = 30, grad window 10, {device}; {rounds} rounds, parts at the step's own k\n",
             "| part | median s |", "| --- | --- |"]
    lines += [f"| {name} | {median(values):.3f} |" for name, values in parts.items()]
    lines += [f"| **sum of parts** | {median([sum(v) for v in zip(*parts.values())]):.3f} |",
              f"| **training step** | {median(steps):.3f} |",
              f"\n**floor ratio** (median of per-round step / sum): **{median(ratios):.3f}** "
              f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.05)"]
    return "\n".join(lines)
