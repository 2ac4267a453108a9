"""Section ``naive``: the training step as reward-finetuning scripts write it (diffusers' pipeline with gradients),
truncated and full chain, against reneg's step: time and peak memory, each in a fresh process."""

from __future__ import annotations

from benchmarks.common import child, median


def naive_step(trainer, *, detach: bool):
    """One step as reward-finetuning scripts write it: the diffusers pipeline with gradients, the learned negative as
    ``negative_prompt_embeds``; ``detach``: a ``callback_on_step_end`` cuts the chain before the last step."""
    import torch

    from reneg.methods.randomness import draw_batch

    pipe, family = trainer.model.pipe, trainer.family
    call = type(pipe).__call__.__wrapped__  # diffusers wraps __call__ in torch.no_grad()

    def cut(pipeline, index, t, kwargs):
        return {"latents": kwargs["latents"].detach()} if index < trainer.steps - 1 else {}

    def step():
        batch = draw_batch(family, trainer.prompt_texts, seed=trainer.config.seed, step=trainer.step,
                           indices=range(trainer.config.batch_size), resolution=trainer.resolution,
                           steps=trainer.steps, grad_window=trainer.grad_window)
        with torch.no_grad():
            prompt_embeds = family.encode(batch.prompts).embeds
        negative = trainer.params.negative().embeds.expand(len(batch.prompts), -1, -1)
        with torch.enable_grad():
            images = call(pipe, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative,
                          latents=batch.latents.to(trainer.device), num_inference_steps=trainer.steps,
                          guidance_scale=trainer.guidance_scale, output_type="pt",
                          callback_on_step_end=cut if detach else None,
                          callback_on_step_end_tensor_inputs=["latents"]).images
            loss = -trainer.reward(images, batch.prompts).float().mean()
            loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.step += 1

    return step


def naive(rounds: int, device: str) -> str:
    kinds = {"reneg step (grad window 10, one grad call)": "reneg",
             "naive: pipeline + callback detaching all but the last step": "naive-callback",
             "naive: pipeline, full chain (no detach)": "naive-full"}
    results = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, kind in kinds.items():
            results[name].append(child("memory", kind, "30", "10", "8", device, "timed"))
    ref = results["reneg step (grad window 10, one grad call)"]
    ref_s, ref_m = median([r["seconds"] for r in ref]), median([r["peak_delta_mib"] for r in ref])
    lines = ["### Versus a naive step through diffusers' StableDiffusionPipeline",
             f"world, batch 8, T = 30, {device}; each value a fresh process: peak memory of its first step, seconds "
             f"of its second; median of {rounds}\n",
             "| step | s (median) | peak delta MiB (median) | time ratio to reneg | memory ratio to reneg |",
             "| --- | --- | --- | --- | --- |"]
    for name, values in results.items():
        s, m = median([r["seconds"] for r in values]), median([r["peak_delta_mib"] for r in values])
        lines.append(f"| {name} | {s:.2f} | {m:.1f} | {s / ref_s:.2f} | {m / ref_m:.2f} |")
    return "\n".join(lines)
