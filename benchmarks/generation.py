"""Section ``generation``: ``reneg generate``'s image path and the command itself against diffusers'
``StableDiffusionPipeline`` on the same model, prompts, batch and steps (images/s ratios)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import median, now


def generation(rounds: int, device: str, batch: int = 8, prompts_count: int = 16) -> str:
    import torch

    from reneg.generate import GenerateConfig, generate, generate_images, method_for
    from reneg.io import to_pil
    from reneg.models.loading import load_model
    from reneg.prompts import load_benchmark

    model = load_model(None, device=device)
    pipe, defaults = model.pipe, model.defaults
    prompts = [p.text for p in load_benchmark(defaults.benchmark)][:prompts_count]
    steps, scale = defaults.num_inference_steps, defaults.guidance_scale
    work = Path(tempfile.mkdtemp(prefix="reneg-bench-gen-"))
    prompts_file = work / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    config = GenerateConfig(prompts=str(prompts_file), batch_size=batch, device=device, out=str(work / "out"))
    method = method_for(model, config)

    def ours():
        for images in generate_images(model, prompts, method, guidance_scale=scale, steps=steps,
                                      resolution=model.resolution, generator=torch.Generator().manual_seed(0),
                                      batch_size=batch):
            to_pil(images)

    def command():
        generate(config, model=model)

    def diffusers(save: bool = False):
        generator = torch.Generator().manual_seed(0)
        for start in range(0, len(prompts), batch):
            images = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=scale,
                          generator=generator, output_type="pil").images
            for offset, image in enumerate(images if save else []):
                image.save(work / f"diffusers-{start + offset:05d}.png")

    variants = {"diffusers StableDiffusionPipeline(...) -> PIL": diffusers,
                "reneg generate_images -> PIL (the command's image path)": ours,
                "diffusers StableDiffusionPipeline(...) -> PIL -> PNG files": lambda: diffusers(save=True),
                "reneg generate (the command, PNG files written)": command}
    pipe.set_progress_bar_config(disable=True)
    for run in variants.values():
        run()  # warm-up
    times = {name: [] for name in variants}
    for round_ in range(rounds):
        names = list(variants)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # each variant leads in turn
            run = variants[name]
            start = now()
            run()
            sync()
            times[name].append(now() - start)
    pil = "diffusers StableDiffusionPipeline(...) -> PIL"
    png = "diffusers StableDiffusionPipeline(...) -> PIL -> PNG files"
    lines = ["### Generation: reneg vs diffusers' StableDiffusionPipeline",
             f"world, {device}, {len(prompts)} prompts, batch {batch}, {steps} DDIM steps, CFG {scale}, null negative; "
             f"variants interleaved, each leading in turn; {rounds} rounds. The ratio is the median of the "
             "per-round ratios to diffusers' path with the same output (PIL images, or PNG files written)\n",
             "| path | images/s (median) | ratio to diffusers (median) | per-round ratios, min-max |",
             "| --- | --- | --- | --- |"]
    for name, values in times.items():
        base = times[png if "PNG" in name else pil]
        ratios = [b / v for b, v in zip(base, values)]
        lines.append(f"| {name} | {len(prompts) / median(values):.2f} | {median(ratios):.3f} | "
                     f"{min(ratios):.3f}-{max(ratios):.3f} |")
    return "\n".join(lines)
