"""Continue a world build's text encoder + UNet (the shipped v3.1 world: docs/world.md).

    python benchmarks/world_sd_continue.py --work-dir W --out DIR [--steps 3000] [--schedule-steps 6000] [--lr 2.5e-4]

The v3 build's `sd` stage (4500 steps, cosine to 0) stopped while shape adherence was still rising. This
warm restart loads W/sd (fp32, EMA weights), trains both models on W's data and VAE latents with the build's
loss (min-SNR 5, caption dropout, AdamW, grad clip 1) under a fresh cosine schedule of ``--schedule-steps``
(warm-up 100) from ``--lr``, keeps an EMA (0.999) started at the loaded weights, and after ``--steps`` saves
the EMA pipeline to DIR. v3.1: 3000 of a 6000-step schedule (13.5 min on 2 cores; the run was stopped there
for time). To ship it: point W/sd at DIR (keep the old one) and rerun `reneg world-build --work-dir W --jobs 1`
(only the ship stage runs: the guidance sweep, the per-word diagnostic, fp16 weights).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline

from reneg.world.data import loader
from reneg.world.stages import (CAPTION_DROPOUT, SD_SCHEDULER, SDRecipe, _cosine_lr, _ema_update, _loss_weight,
                                _target, encode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--schedule-steps", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    args = parser.parse_args()
    if not 1 <= args.steps <= args.schedule_steps or args.lr <= 0:
        parser.error("need 1 <= --steps <= --schedule-steps and --lr > 0")
    work = args.work_dir
    data = torch.load(f"{work}/data.pt", weights_only=False)
    vae = AutoencoderKL.from_pretrained(f"{work}/vae").eval()
    latents = encode(vae, data) * vae.config.scaling_factor
    pipe = StableDiffusionPipeline.from_pretrained(f"{work}/sd", dtype=torch.float32)
    text_encoder, unet, tokenizer = pipe.text_encoder.train(), pipe.unet.train(), pipe.tokenizer
    ema_text = copy.deepcopy(text_encoder).requires_grad_(False)
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    recipe = SDRecipe()
    noise_scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items()
                                       if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")})
    snr = noise_scheduler.alphas_cumprod / (1 - noise_scheduler.alphas_cumprod)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine_lr(s, args.schedule_steps, 100))
    generator = torch.Generator().manual_seed(12345)
    batches, start = loader(len(data), recipe.batch_size, seed=12346), time.time()
    for step in range(args.steps):
        indices = next(batches)
        captions = ["" if torch.rand((), generator=generator) < CAPTION_DROPOUT else data.captions[i]
                    for i in indices.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=recipe.text_length, truncation=True,
                        return_tensors="pt").input_ids
        x0 = latents[indices]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (len(indices),), generator=generator)
        prediction = unet(noise_scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text_encoder(ids)[0]).sample
        error = (prediction - _target(noise_scheduler, x0, noise, t, "epsilon")).pow(2).mean(dim=(1, 2, 3))
        loss = (_loss_weight(snr[t], recipe) * error).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        _ema_update(ema_text, text_encoder, 0.999)
        _ema_update(ema_unet, unet, 0.999)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True)
    StableDiffusionPipeline(vae=pipe.vae, text_encoder=ema_text.eval(), tokenizer=tokenizer, unet=ema_unet.eval(),
                            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
